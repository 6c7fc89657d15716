"""Contract compatibility: a table of schema pairs with expected verdicts, plus generated instances.

The pairs are built from small pydantic models (``extra="forbid"``, like every contract) so the schemas look
exactly like generated ones. The hypothesis test generates instances from the *sub* schema of every pair the
checker calls included and validates them with the *sup* pydantic model: a wrong "compatible" fails it.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field

from inlet.contracts.compat import Incompatibility, check, is_subschema


class M(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- the models the pairs are built from ------------------------------------------------------------------
class Base(M):
    id: str
    qty: float


class AddOptional(Base):
    note: str | None = None


class AddRequired(Base):
    note: str


class NoteOptional(Base):
    note: str | None = None


class NoteRequiredNullable(Base):
    note: str | None


class Enum3(M):
    unit: Literal["Wh", "kWh", "MWh"]


class Enum2(M):
    unit: Literal["Wh", "kWh"]


class ConstA(M):
    kind: Literal["a"] = "a"


class ConstB(M):
    kind: Literal["b"] = "b"


class IntVal(M):
    v: int


class FloatVal(M):
    v: float


class StrVal(M):
    v: str


class StrOrNone(M):
    v: str | None


class DateTimeVal(M):
    v: datetime


class DateVal(M):
    v: date


class Ge0(M):
    v: Annotated[int, Field(ge=0)]


class Gt0(M):
    v: Annotated[int, Field(gt=0)]


class Ge0Le100(M):
    v: Annotated[int, Field(ge=0, le=100)]


class FloatGt0(M):
    v: Annotated[float, Field(gt=0)]


class FloatGe0(M):
    v: Annotated[float, Field(ge=0)]


class Max10(M):
    v: Annotated[str, Field(max_length=10)]


class Max20(M):
    v: Annotated[str, Field(max_length=20)]


class Code(M):
    v: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class Code2(M):
    v: Annotated[str, Field(pattern=r"^[A-Z]{2,3}$")]


class ListInt(M):
    v: list[int]


class ListFloat(M):
    v: list[float]


class ListStr(M):
    v: list[str]


class ListIntNonEmpty(M):
    v: Annotated[list[int], Field(min_length=1)]


class DictInt(M):
    v: dict[str, int]


class DictFloat(M):
    v: dict[str, float]


class Inner1(M):
    unit: Literal["Wh", "kWh"]


class Inner2(M):
    unit: Literal["Wh", "kWh"]
    phase: Literal["L1", "L2", "L3"] | None = None


class Outer1(M):
    reading: Inner1
    history: list[Inner1] = []


class Outer2(M):
    reading: Inner2
    history: list[Inner2] = []


class X(M):
    type: Literal["x"] = "x"
    v: int


class Y(M):
    type: Literal["y"] = "y"
    s: str


class Z(M):
    type: Literal["z"] = "z"
    flag: bool


class Union2(M):
    val: Annotated[X | Y, Field(discriminator="type")]


class Union3(M):
    val: Annotated[X | Y | Z, Field(discriminator="type")]


class Documented(Base):
    """Same fields as Base, but with titles, descriptions and a different default elsewhere."""

    id: str = Field(title="Identifier", description="the id")
    qty: float = Field(description="a quantity")


class Tree(M):
    name: str
    children: list[Tree] = []


class Tree2(M):
    name: str
    children: list[Tree2] = []
    weight: float | None = None


def s(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


# (id, old, new, BACKWARD ok, FORWARD ok)
CASES: list[tuple[str, type[M], type[M], bool, bool]] = [
    ("identical", Base, Base, True, True),
    ("annotations only (title, description)", Base, Documented, True, True),
    ("add optional field (extra=forbid)", Base, AddOptional, True, False),
    ("add required field", Base, AddRequired, False, False),
    ("make field required (nullable stays)", NoteOptional, NoteRequiredNullable, False, True),
    ("make field optional", NoteRequiredNullable, NoteOptional, True, False),
    ("remove optional field", AddOptional, Base, False, True),
    ("remove required field", AddRequired, Base, False, False),
    ("narrow enum", Enum3, Enum2, False, True),
    ("widen enum", Enum2, Enum3, True, False),
    ("change const", ConstA, ConstB, False, False),
    ("widen int -> float", IntVal, FloatVal, True, False),
    ("widen str -> str|None", StrVal, StrOrNone, True, False),
    ("change type int -> str", IntVal, StrVal, False, False),
    ("change format date-time -> date", DateTimeVal, DateVal, False, False),
    ("add format str -> date-time", StrVal, DateTimeVal, False, True),
    ("tighten bound ge=0 -> gt=0", Ge0, Gt0, False, True),
    ("add upper bound", Ge0, Ge0Le100, False, True),
    ("float ge=0 -> gt=0", FloatGe0, FloatGt0, False, True),
    ("loosen maxLength 10 -> 20", Max10, Max20, True, False),
    # Truly BACKWARD-compatible, but regex inclusion is not decided: any pattern change is reported (sound side).
    ("loosen pattern (reported: regex inclusion undecided)", Code, Code2, False, False),
    ("array items int -> float", ListInt, ListFloat, True, False),
    ("array items int -> str", ListInt, ListStr, False, False),
    ("array minItems 0 -> 1", ListInt, ListIntNonEmpty, False, True),
    ("dict values int -> float", DictInt, DictFloat, True, False),
    ("nested $ref gains optional field", Outer1, Outer2, True, False),
    ("discriminated union adds member", Union2, Union3, True, False),
    ("discriminated union removes member", Union3, Union2, False, True),
    ("recursive $ref gains optional field", Tree, Tree2, True, False),
]


@pytest.mark.parametrize(("name", "old", "new", "backward", "forward"), CASES, ids=[c[0] for c in CASES])
def test_case_table(name: str, old: type[M], new: type[M], backward: bool, forward: bool) -> None:
    assert (not check(s(old), s(new), "BACKWARD")) is backward, check(s(old), s(new), "BACKWARD")
    assert (not check(s(old), s(new), "FORWARD")) is forward, check(s(old), s(new), "FORWARD")
    assert (not check(s(old), s(new), "FULL")) is (backward and forward)


def test_real_contract_with_itself_and_a_deep_enum_narrowed() -> None:
    path = Path(__file__).resolve().parents[2] / "contracts" / "schemas" / "clinical.observation.v1.0.json"
    schema = json.loads(path.read_text())
    assert check(schema, json.loads(json.dumps(schema)), "FULL") == []
    narrowed = json.loads(json.dumps(schema))
    precision = narrowed["$defs"]["DateTimeValue"]["properties"]["precision"]["anyOf"][0]
    precision["enum"].remove("microsecond")
    assert check(schema, narrowed, "FORWARD") == []
    found = check(schema, narrowed, "BACKWARD")  # value and components[].value both use DateTimeValue
    assert [i.path for i in found] == [
        "properties.components.items.properties.value[type='datetime'].properties.precision",
        "properties.value[type='datetime'].properties.precision",
    ]
    assert all("value 'microsecond' is allowed by the old schema but not the new one" in str(i) for i in found)


def test_messages_name_field_change_and_mode() -> None:
    (inc,) = check(s(Enum2), s(Enum3))
    assert isinstance(inc, Incompatibility)
    assert inc.path == "properties.unit" and inc.mode == "FORWARD"
    text = str(inc)
    assert text.startswith("field 'unit' (properties.unit): value 'MWh' is allowed by the new schema but not the old")
    assert text.endswith("consumers built against the old schema cannot read it (FORWARD)")
    (req,) = check(s(Base), s(AddRequired), "BACKWARD")
    assert str(req).startswith(
        "field 'note' (properties.note): it is required by the new one but not declared by "
        "the old schema, so events written under the old schema are rejected by the new one"
    )
    (member,) = check(s(Union3), s(Union2), "BACKWARD")
    assert member.path == "properties.val[type='z']"
    assert "union member type='z' is allowed by the old schema but the new one has no such member" in str(member)
    full = check(s(Base), s(AddOptional), "FULL")
    assert [str(i).rsplit("(", 1)[1] for i in full] == ["FORWARD, required by FULL)"]
    assert is_subschema(s(Base), s(AddOptional)) == []
    assert is_subschema(s(AddOptional), s(Base)) == [
        "properties.note: the field is allowed by the first schema but not the second (additionalProperties: false)"
    ]


def test_integer_exclusive_bound_equals_inclusive() -> None:
    a = {"type": "integer", "exclusiveMinimum": 0}
    b = {"type": "integer", "minimum": 1}
    assert check(a, b, "FULL") == []
    assert is_subschema({"type": "number", "exclusiveMinimum": 0}, b) != []


def test_enum_split_across_union_members_and_nullable() -> None:
    sub = {"enum": ["a", "b", None]}
    sup = {"anyOf": [{"const": "a"}, {"type": "string", "maxLength": 1}, {"type": "null"}]}
    assert is_subschema(sub, sup) == []
    assert is_subschema({"type": "boolean"}, {"enum": [True, False]}) == []
    assert is_subschema({"enum": [1]}, {"enum": [True]}) != []  # 1 is not true in JSON


@pytest.mark.parametrize("keyword", ["patternProperties", "not", "minProperties", "propertyNames"])
def test_unsupported_keyword_is_reported_by_name_unless_identical(keyword: str) -> None:
    value: Any = (
        {"^x": {"type": "string"}}
        if keyword == "patternProperties"
        else ({"type": "null"} if keyword == "not" else 1 if keyword == "minProperties" else {"maxLength": 3})
    )
    plain = {"type": "object", "properties": {"a": {"type": "string"}}}
    extended = {**plain, keyword: value}
    reasons = is_subschema(plain, extended)
    assert reasons and keyword in reasons[0]
    assert is_subschema(extended, json.loads(json.dumps(extended))) == []


def test_overlapping_oneof_without_discriminator_is_not_claimed() -> None:
    sup = {"oneOf": [{"type": "string"}, {"type": "string", "maxLength": 3}]}
    assert any("oneOf" in r for r in is_subschema({"type": "string"}, sup))
    disjoint = {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    assert is_subschema({"type": "integer", "minimum": 0}, disjoint) == []


def test_a_failed_ref_pair_is_not_remembered_as_included() -> None:
    member = {"type": "object", "properties": {"a": {"$ref": "#/$defs/Q"}}, "additionalProperties": False}
    sup = {"$defs": {"Q": {"type": "integer"}}, "anyOf": [member, {**member, "title": "again"}]}
    sub = {
        "$defs": {"Q": {"type": "string"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/Q"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    assert is_subschema(sub, sup) == [
        "properties.a: type string is allowed by the first schema but the second requires integer"
    ]


def test_allof_with_several_members_is_not_ignored() -> None:
    sup = {"allOf": [{"type": "string"}, {"maxLength": 3}]}
    assert any("allOf" in r for r in is_subschema({"type": "string"}, sup))
    assert is_subschema({"allOf": [{"type": "string", "maxLength": 2}]}, {"type": "string", "maxLength": 3}) == []


# --- hypothesis: instances of the sub schema must validate under the sup model ------------------------------
def instances(node: Any, root: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """A tiny generator of JSON instances for the pydantic-style schemas used above."""
    while "$ref" in node:
        extra = {k: v for k, v in node.items() if k == "$tag"}
        node = {**root["$defs"][node["$ref"].rsplit("/", 1)[1]], **extra}
    if "anyOf" in node or "oneOf" in node:
        members = node.get("anyOf") or node["oneOf"]
        tag = node.get("discriminator", {}).get("propertyName")
        return st.one_of([instances({**m, "$tag": tag} if tag else m, root, depth) for m in members])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    t = node.get("type")
    if t == "null":
        return st.none()
    if t == "boolean":
        return st.booleans()
    if t == "integer":
        lo = node.get("minimum", node["exclusiveMinimum"] + 1 if "exclusiveMinimum" in node else None)
        return st.integers(min_value=lo, max_value=node.get("maximum"))
    if t == "number":
        return st.floats(
            min_value=node.get("minimum", node.get("exclusiveMinimum")),
            exclude_min="exclusiveMinimum" in node,
            allow_nan=False,
            allow_infinity=False,
            width=32,
        )
    if t == "string":
        if node.get("format") == "date-time":
            return st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat)
        if node.get("format") == "date":
            return st.dates().map(date.isoformat)
        if "pattern" in node:
            return st.from_regex(re.compile(node["pattern"]), fullmatch=True)
        return st.text(max_size=node.get("maxLength", 12))
    if t == "array":
        if depth > 2:
            return st.just([]) if node.get("minItems", 0) == 0 else st.nothing()
        return st.lists(instances(node["items"], root, depth + 1), min_size=node.get("minItems", 0), max_size=3)
    assert t == "object", node
    if "properties" not in node:
        return st.dictionaries(st.text(max_size=3), instances(node["additionalProperties"], root, depth), max_size=3)
    required = set(node.get("required", [])) | ({node["$tag"]} if "$tag" in node else set())
    props = {k: instances(v, root, depth + 1) for k, v in node["properties"].items()}
    optional = {k: v for k, v in props.items() if k not in required}
    return st.fixed_dictionaries({k: v for k, v in props.items() if k in required}, optional=optional)


INCLUDED = [
    (f"{name} {'old<=new' if fwd else 'new<=old'}", sub, sup)
    for name, old, new, _, _ in CASES
    for fwd, sub, sup in ((True, old, new), (False, new, old))
    if not is_subschema(s(sub), s(sup))
]


@pytest.mark.parametrize(("name", "sub", "sup"), INCLUDED, ids=[c[0] for c in INCLUDED])
def test_included_verdicts_hold_on_generated_instances(name: str, sub: type[M], sup: type[M]) -> None:
    schema = s(sub)

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(instances(schema, schema))
    def run(instance: Any) -> None:
        payload = json.dumps(instance)
        sub.model_validate_json(payload)  # the generator is right about sub ...
        sup.model_validate_json(payload)  # ... and the checker is right that sup accepts it

    run()
