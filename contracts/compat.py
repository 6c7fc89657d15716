"""Compatibility of two contract JSON Schemas, decided by inclusion of valid instances.

``is_subschema(a, b)`` lists the reasons why some instance valid under ``a`` might be invalid under ``b``
(empty: every instance of ``a`` is valid under ``b``). ``check(old, new, mode)`` applies it per mode:
BACKWARD = old ⊆ new, FORWARD = new ⊆ old (the default), FULL = both.

Why not a library: ``jsonsubschema`` 0.0.8 (unmaintained) raises ``UnsupportedNegatedObject`` on every
pydantic discriminated union, even comparing a schema with itself, and ignores ``format`` (it says
``date-time`` ⊆ ``date``); ``jsoncompat`` 0.3.1 rejects adding a union member in every role, ignores
``format`` and only answers a bool, so it cannot say which field broke. Pydantic schemas use a small
subset of JSON Schema, so the checker below covers exactly that subset and stays sound elsewhere:

- Semantics are what pydantic validates: ``format`` is an assertion (a changed format is a change), a
  ``discriminator`` makes the union tagged (the tag is required and selects the member), ``title``,
  ``description``, ``default``, ``examples`` are annotations and ignored (pydantic emits every field, so a
  changed default is not visible in instances). ``extra="forbid"`` is ``additionalProperties: false``:
  adding an optional field is BACKWARD-compatible (old events lack it) but not FORWARD (old consumers reject it).
- When unsure it says so: any keyword outside the subset must appear identically on both sides (or the
  whole sub-schemas must be identical), otherwise it is reported by name. Some true inclusions are
  therefore reported (e.g. a string ⊆ a union of two length-split strings); a reported "compatible" is proven.
- Recursive ``$ref`` pairs are assumed included while being compared (coinduction; sound for finite JSON).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Incompatibility", "Mode", "check", "is_subschema"]

Mode = Literal["BACKWARD", "FORWARD", "FULL"]
Schema = dict[str, Any]
Reason = tuple[str, str]  # (path, change with {sub}/{sup} placeholders)

_ANNOTATIONS = {
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
    "$schema",
    "$id",
    "$defs",
    "definitions",
    "discriminator",
}
_KNOWN = {
    "type",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "$ref",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "items",
    "minItems",
    "maxItems",
    "uniqueItems",
    "properties",
    "required",
    "additionalProperties",
}
# Keywords whose meaning depends on their neighbours: only identical sub-schemas are accepted.
_ENTANGLED = {
    "prefixItems",
    "patternProperties",
    "unevaluatedProperties",
    "unevaluatedItems",
    "contains",
    "if",
    "then",
    "else",
    "not",
    "dependentSchemas",
}
_TYPES = ("null", "boolean", "integer", "number", "string", "array", "object")


@dataclass(frozen=True)
class Incompatibility:
    """One reason two schema versions are not compatible in ``mode`` (the direction that broke)."""

    path: str
    change: str
    mode: Mode
    checked: Mode | None = None  # the mode asked for, when it differs (FULL)

    def __str__(self) -> str:
        name = [p for p in self.path.split(".") if p][-2:]
        where = f"field '{name[1]}' ({self.path})" if len(name) == 2 and name[0] == "properties" else self.path
        if self.mode == "FORWARD":
            why = "consumers built against the old schema cannot read it"
        else:
            why = "events written under the old schema are rejected by the new one"
        tag = self.mode if self.checked in (None, self.mode) else f"{self.mode}, required by {self.checked}"
        return f"{where}: {self.change}, so {why} ({tag})"


def check(old: Schema, new: Schema, mode: Mode = "FORWARD") -> list[Incompatibility]:
    """Incompatibilities of ``new`` against ``old`` under ``mode``; empty means compatible."""
    out: list[Incompatibility] = []
    checked = mode if mode == "FULL" else None
    if mode in ("FORWARD", "FULL"):  # every new instance must be readable by old consumers: new ⊆ old
        out += [
            Incompatibility(p, _fill(c, "the new schema", "the old one"), "FORWARD", checked)
            for p, c in _Checker(new, old).includes(new, old, "")
        ]
    if mode in ("BACKWARD", "FULL"):  # every old instance must stay valid under new: old ⊆ new
        out += [
            Incompatibility(p, _fill(c, "the old schema", "the new one"), "BACKWARD", checked)
            for p, c in _Checker(old, new).includes(old, new, "")
        ]
    return out


def is_subschema(sub: Schema, sup: Schema) -> list[str]:
    """Why some instance valid under ``sub`` may be invalid under ``sup`` (empty: ``sub`` ⊆ ``sup``)."""
    return [
        f"{p or '(root)'}: {_fill(c, 'the first schema', 'the second')}"
        for p, c in _Checker(sub, sup).includes(sub, sup, "")
    ]


def _fill(change: str, sub: str, sup: str) -> str:
    return change.replace("{sub}", sub).replace("{sup}", sup)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _join(path: str, part: str) -> str:
    return f"{path}.{part}" if path else part


def _jtype(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(v), "unknown")


def _key(v: Any) -> str:
    """JSON identity of a value (1 and true differ, 1 and 1.0 do not)."""
    return json.dumps(v, sort_keys=True) if not isinstance(v, float) or not v.is_integer() else str(int(v))


class _Checker:
    def __init__(self, sub_root: Schema, sup_root: Schema) -> None:
        self.roots = (sub_root, sup_root)
        self.assumed: set[tuple[int, int]] = set()

    # -- normal form: a list of branches, each with one type (or finite values) -------------------------
    def resolve(self, node: Any, side: int) -> Any:
        seen = 0
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#") or seen > 50:
                raise ValueError(f"cannot resolve $ref {ref!r}")
            target: Any = self.roots[side]
            for part in [p for p in ref[1:].split("/") if p]:
                target = target[part.replace("~1", "/").replace("~0", "~")]
            rest = {k: v for k, v in node.items() if k != "$ref" and k not in _ANNOTATIONS}
            node = {**target, **rest} if rest else target
            seen += 1
        return node

    def branches(self, node: Any, side: int) -> list[Schema]:
        node = self.resolve(node, side)
        if node is True or node == {}:
            return [{}]
        if node is False:
            return []
        if not isinstance(node, dict):
            raise ValueError(f"not a schema: {node!r}")
        if "allOf" in node and len(node["allOf"]) == 1:
            inner = self.resolve(node["allOf"][0], side)
            node = {**{k: v for k, v in node.items() if k != "allOf"}, **inner}
        for union in ("anyOf", "oneOf"):
            if union in node:
                rest = {k: v for k, v in node.items() if k not in _ANNOTATIONS and k != union}
                out = [b for member in node[union] for b in self.branches({**member, **rest} if rest else member, side)]
                tag = (
                    node.get("discriminator", {}).get("propertyName")
                    if isinstance(node.get("discriminator"), dict)
                    else None
                )
                if tag:  # tagged union (pydantic): the tag must be present and selects the member
                    out = [{**b, "required": sorted({*b.get("required", []), tag})} for b in out]
                elif union == "oneOf" and side == 1 and not self.pairwise_disjoint(out):
                    out = [{"$unsupported": "oneOf whose members may overlap"}]
                return out
        if "const" in node or "enum" in node:
            values = [node["const"]] if "const" in node else list(node["enum"])
            if "enum" in node and "const" in node:
                values = [v for v in values if _key(v) == _key(node["const"])]
            return [{**node, "$values": values}]
        types = node.get("type")
        if isinstance(types, list):
            return [b for t in types for b in self.branches({**node, "type": t}, side)]
        if types == "null":
            return [{**node, "$values": [None]}]
        if types == "boolean":
            return [{**node, "$values": [True, False]}]
        return [node]

    def pairwise_disjoint(self, bs: list[Schema]) -> bool:
        return all(self.disjoint(a, b) for i, a in enumerate(bs) for b in bs[i + 1 :])

    def disjoint(self, a: Schema, b: Schema) -> bool:
        if "$values" in a and "$values" in b:
            return not {_key(v) for v in a["$values"]} & {_key(v) for v in b["$values"]}
        ta, tb = self.types_of(a), self.types_of(b)
        if ta is not None and tb is not None and not ta & tb:
            return True
        if a.get("type") == b.get("type") == "object":
            for p in set(a.get("required", [])) & set(b.get("required", [])):
                pa, pb = a.get("properties", {}).get(p), b.get("properties", {}).get(p)
                if pa is not None and pb is not None:
                    ba, bb = self.branches(pa, 1), self.branches(pb, 1)
                    if all(self.disjoint(x, y) for x in ba for y in bb):
                        return True
        return False

    @staticmethod
    def types_of(b: Schema) -> set[str] | None:
        if "$values" in b:
            return {_jtype(v) for v in b["$values"]} | (
                {"number"} if any(_jtype(v) == "integer" for v in b["$values"]) else set()
            )
        t = b.get("type")
        return None if t is None else ({"integer", "number"} if t == "number" else {t})

    # -- inclusion --------------------------------------------------------------------------------------
    def includes(self, sub: Any, sup: Any, path: str) -> list[Reason]:
        pair: tuple[int, int] | None = None
        if isinstance(sub, dict) and "$ref" in sub and isinstance(sup, dict) and "$ref" in sup:
            try:
                pair = (id(self.resolve(sub, 0)), id(self.resolve(sup, 1)))
            except (ValueError, KeyError, TypeError) as e:
                return [(path, f"cannot be analysed ({e})")]
            if pair in self.assumed:  # assumed only while this pair is being compared (on the stack)
                return []
            self.assumed.add(pair)
        try:
            subs, sups = self.branches(sub, 0), self.branches(sup, 1)
            out: list[Reason] = []
            for i, s in enumerate(subs):
                here = path if len(subs) == 1 or "$values" in s else f"{path}[{self.label(s, i)}]"
                out += self.branch_in_union(s, sups, here)
            return out
        except (ValueError, KeyError, TypeError) as e:
            return [(path, f"cannot be analysed ({e})")]
        finally:
            if pair is not None:
                self.assumed.discard(pair)

    @staticmethod
    def label(b: Schema, i: int) -> str:
        tag = [
            f"{k}={_show(v['const'])}"
            for k, v in b.get("properties", {}).items()
            if isinstance(v, dict) and "const" in v and k in b.get("required", [])
        ]
        return tag[0] if tag else str(b.get("type", i))

    def branch_in_union(self, s: Schema, sups: list[Schema], path: str) -> list[Reason]:
        if "$values" in s:  # finite: check every value
            out: list[Reason] = []
            for v in s["$values"]:
                best = min((self.value_in(v, b) for b in sups), key=len, default=["not allowed at all"])
                if best:
                    out.append((path, f"value {_show(v)} is allowed by {{sub}} but not {{sup}} ({best[0]})"))
            return out
        if not sups:
            return [(path, "{sub} allows a value here but {sup} allows nothing")]
        tried: list[tuple[bool, int, list[Reason]]] = []
        for b in sups:
            r = self.branch_in(s, b, path)
            if not r:
                return []
            ts, tb = self.types_of(s), self.types_of(b)
            tried.append((not (ts is None or tb is None or ts & tb), len(r), r))
        tag = self.label(s, 0)
        tag_path = _join(path, f"properties.{tag.split('=')[0]}")
        if "=" in tag and all(any(p == tag_path for p, _ in r) for *_, r in tried):
            return [(path, f"union member {tag} is allowed by {{sub}} but {{sup}} has no such member")]
        return min(tried, key=lambda t: (t[0], t[1]))[2]  # explain with the closest member

    def branch_in(self, s: Schema, b: Schema, path: str) -> list[Reason]:
        if "$unsupported" in b or "$unsupported" in s:
            return [(path, f"{b.get('$unsupported') or s['$unsupported']} is not supported, so it cannot be proven")]
        entangled = [k for k in (s.keys() | b.keys()) if k in _ENTANGLED]
        if entangled:
            if self.canon(s, 0) == self.canon(b, 1):
                return []
            return [(path, f"keyword {entangled[0]!r} is not supported unless both sides are identical")]
        for k in b.keys() - _KNOWN - _ANNOTATIONS - {"$values"}:
            if k not in s or self.canon(s[k], 0) != self.canon(b[k], 1):
                return [(path, f"keyword {k!r} of {{sup}} is not supported unless {{sub}} has the same value")]
        if "$values" in b:
            return [
                (
                    path,
                    f"{{sub}} allows any {s.get('type', 'value')} here but {{sup}} allows only "
                    f"{', '.join(map(_show, b['$values']))}",
                )
            ]
        st, bt = s.get("type"), b.get("type")
        if bt is None and not (b.keys() & _KNOWN):
            return []
        if st is None:
            return [(path, "{sub} allows any value here but {sup} restricts it")]
        if bt is not None and st != bt and not (st == "integer" and bt == "number"):
            return [(path, f"type {st} is allowed by {{sub}} but {{sup}} requires {bt}")]
        if st == "string":
            return self.string_in(s, b, path)
        if st in ("integer", "number"):
            return self.number_in(s, b, path)
        if st == "array":
            return self.array_in(s, b, path)
        if st == "object":
            return self.object_in(s, b, path)
        return []

    def string_in(self, s: Schema, b: Schema, path: str) -> list[Reason]:
        out: list[Reason] = []
        if s.get("minLength", 0) < b.get("minLength", 0):
            out.append(
                (path, f"minLength rises from {s.get('minLength', 0)} in {{sub}} to {b['minLength']} in {{sup}}")
            )
        if s.get("maxLength", math.inf) > b.get("maxLength", math.inf):
            out.append(
                (path, f"maxLength {s.get('maxLength', 'unbounded')} in {{sub}} exceeds {b['maxLength']} in {{sup}}")
            )
        if "format" in b and s.get("format") != b["format"]:
            out.append((path, f"format {s.get('format', 'none')!r} in {{sub}} is not {{sup}}'s {b['format']!r}"))
        if "pattern" in b and s.get("pattern") != b["pattern"]:
            out.append((path, f"pattern {s.get('pattern')!r} in {{sub}} is not {{sup}}'s {b['pattern']!r}"))
        return out

    def number_in(self, s: Schema, b: Schema, path: str) -> list[Reason]:
        out: list[Reason] = []
        integral = s.get("type") == "integer"
        for side, (inc, exc, sign) in {
            "lower": ("minimum", "exclusiveMinimum", 1),
            "upper": ("maximum", "exclusiveMaximum", -1),
        }.items():
            sb, bb = self.bound(s, inc, exc, integral), self.bound(b, inc, exc, False)
            if bb is None:
                continue
            ok = sb is not None and (sign * sb[0] > sign * bb[0] or (sb[0] == bb[0] and (sb[1] or not bb[1])))
            if not ok:
                op = ">" if sign > 0 else "<"
                had = "none" if sb is None else f"{op}{'' if sb[1] else '='} {sb[0]:g}"
                out.append(
                    (
                        path,
                        f"{side} bound {had} in {{sub}} is looser than {op}{'' if bb[1] else '='} {bb[0]:g} in {{sup}}",
                    )
                )
        if "multipleOf" in b:
            m, n = b["multipleOf"], s.get("multipleOf", 1 if integral else None)
            if n is None or (n / m) != int(n / m):
                out.append((path, f"{{sup}} requires a multiple of {m}, {{sub}} does not ensure it"))
        return out

    @staticmethod
    def bound(s: Schema, inc: str, exc: str, integral: bool) -> tuple[float, bool] | None:
        """The tightest bound as (value, exclusive); integers turn exclusive bounds into inclusive ones."""
        cands = [(float(s[inc]), False)] if inc in s else []
        if isinstance(s.get(exc), int | float) and not isinstance(s.get(exc), bool):
            cands.append((float(s[exc]), True))
        if not cands:
            return None
        lower = inc == "minimum"
        v, x = max(cands, key=lambda c: (c[0], c[1])) if lower else min(cands, key=lambda c: (c[0], not c[1]))
        if integral:
            v, x = (
                (math.floor(v) + 1 if x else math.ceil(v), False)
                if lower
                else (math.ceil(v) - 1 if x else math.floor(v), False)
            )
        return float(v), x

    def array_in(self, s: Schema, b: Schema, path: str) -> list[Reason]:
        out: list[Reason] = []
        if s.get("minItems", 0) < b.get("minItems", 0):
            out.append((path, f"minItems rises from {s.get('minItems', 0)} in {{sub}} to {b['minItems']} in {{sup}}"))
        if s.get("maxItems", math.inf) > b.get("maxItems", math.inf):
            out.append(
                (path, f"maxItems {s.get('maxItems', 'unbounded')} in {{sub}} exceeds {b['maxItems']} in {{sup}}")
            )
        if b.get("uniqueItems") and not s.get("uniqueItems"):
            out.append((path, "{sup} requires unique items, {sub} does not"))
        if s.get("maxItems", 1) > 0:
            out += self.includes(s.get("items", True), b.get("items", True), _join(path, "items"))
        return out

    def object_in(self, s: Schema, b: Schema, path: str) -> list[Reason]:
        out: list[Reason] = []
        sp, bp = s.get("properties", {}), b.get("properties", {})
        sreq, breq = set(s.get("required", [])), set(b.get("required", []))
        sadd, badd = s.get("additionalProperties", True), b.get("additionalProperties", True)
        for name in sorted(breq - sreq):
            what = "optional in {sub}" if name in sp else "not declared by {sub}"
            out.append((_join(path, f"properties.{name}"), f"it is required by {{sup}} but {what}"))
        for name in sorted(sp):
            here = _join(path, f"properties.{name}")
            if name in bp:
                out += self.includes(sp[name], bp[name], here)
            elif badd is False:
                out.append((here, "the field is allowed by {sub} but not {sup} (additionalProperties: false)"))
            else:
                out += self.includes(sp[name], badd, here)
        if sadd is not False:
            for name in sorted(set(bp) - set(sp)):
                out += self.includes(sadd, bp[name], _join(path, f"properties.{name}"))
            out += self.includes(sadd, badd, _join(path, "additionalProperties"))
        return out

    def value_in(self, v: Any, b: Schema) -> list[str]:
        """Why the single value ``v`` is invalid under branch ``b`` (empty: valid)."""
        if "$unsupported" in b:
            return [b["$unsupported"]]
        if "$values" in b:
            return [] if _key(v) in {_key(x) for x in b["$values"]} else ["not among its allowed values"]
        t, bt = _jtype(v), b.get("type")
        if bt is not None and t != bt and not (t == "integer" and bt == "number"):
            return [f"not of type {bt}"]
        unknown = (b.keys() - _KNOWN - _ANNOTATIONS) | ({"format"} if "format" in b else set())
        if unknown or t in ("array", "object"):
            return [f"cannot verify {sorted(unknown)[0] if unknown else t + ' values'}"]
        if t == "string":
            r = self.string_in({"type": "string", "minLength": len(v), "maxLength": len(v)}, b, "")
            if "pattern" in b:
                r = [x for x in r if "pattern" not in x[1]] + ([] if re.search(b["pattern"], v) else [("", "pattern")])
            return [x[1] for x in r]
        if t in ("integer", "number"):
            r = self.number_in({"type": t, "minimum": v, "maximum": v, "multipleOf": b.get("multipleOf", 1)}, b, "")
            m = b.get("multipleOf")
            return [x[1] for x in r] + ([] if m is None or (v / m) == int(v / m) else [f"not a multiple of {m}"])
        return []

    def canon(self, node: Any, side: int, depth: int = 0) -> Any:
        """A comparable form: annotations dropped, ``$ref`` inlined (to a depth) so two roots compare."""
        if isinstance(node, list):
            return [self.canon(x, side, depth) for x in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            if depth > 8:
                return {"$ref": node["$ref"]}
            return self.canon(self.resolve(node, side), side, depth + 1)
        return {k: self.canon(v, side, depth) for k, v in sorted(node.items()) if k not in _ANNOTATIONS}
