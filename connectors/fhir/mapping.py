"""FHIR R4 Observation → ``clinical.observation`` v2.0, and the building blocks every FHIR mapper shares.

Pure functions of a resource and the integration's zone: no I/O, every timestamp through core.time.
An element the contract cannot represent (an unknown ``value[x]``) or a malformed element (an object where
FHIR has an array) is a :class:`MappingError` naming the resource and the element path
(``Observation/123.effectivePeriod.start: ...``), so the record goes to the DLQ instead of being half-mapped.
The other resource types live in :mod:`connectors.fhir.resources`, which also holds the dispatch.

References within a Bundle (Synthea's transaction bundles refer by ``urn:uuid:`` fullUrls):
:func:`bundle_index` builds a dict once per bundle and every mapper takes it as the optional keyword
``index``. Without it (the search and Bulk NDJSON hot path) a reference is only parsed
(:func:`reference_id`), which costs nothing extra. With it, a reference whose text is an entry's
``fullUrl`` — or, for a relative ``Type/id``, an entry's type and id — yields that resource's own id, its
type, and (for ``medicationReference``) the resource itself. Relative references are matched on
``Type/id`` whatever the entry's base URL: a bundle mixing two servers' ``Patient/1`` resolves to the first.
A resource without an ``id`` (a transaction entry the server has not stored yet) is a MappingError: events
are keyed on the server's id. A reference to such an entry keeps the ``urn:uuid`` it names.

``effective[x]`` beyond the contract's words: ``effectiveTiming`` spans its ``event`` times (start = the
earliest, end = the latest when there are several) or, without events, its ``repeat.boundsPeriod``.

FHIR ``decimal`` elements (``Quantity.value``, ``SampledData.period`` …) become exact decimal strings through
:func:`fhir_decimal`: from a :class:`~decimal.Decimal` or an int as written, from a float through ``repr``.
That is exact only for JSON parsed by :func:`inlet.core.exact_json.loads` (what the search and Bulk connectors
use), which leaves a number a float only where ``repr`` gives back what the JSON wrote. A float with more
than 15 significant digits may have rounded already (plain ``orjson.loads``), so it is a MappingError, as is
anything not finite or not a number (a string holding a plain decimal passes as written): never a quietly
rounded value. ``clinical.observation`` v1.0 is published from v2.0 by the contract's converter
(``contracts.clinical_observation_v2``).
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, TypeVar, get_args

from inlet.contracts.base import DECIMAL_PATTERN, Contract, Precision, checked_instance, plain_decimal
from inlet.contracts.clinical_observation import BooleanValue, CodedValue, Coding, IntegerValue, StringValue
from inlet.contracts.clinical_observation_v2 import Component, ObservationV2, QuantityValue
from inlet.core.errors import MappingError
from inlet.core.time import Instant, normalise

__all__ = [
    "LOINC",
    "VALUE_KEYS",
    "BundleIndex",
    "Resource",
    "bundle_index",
    "codings",
    "fhir_decimal",
    "items",
    "map_observation",
    "map_observation_checked",
    "obj",
    "period",
    "quantity",
    "reference_id",
    "reference_type",
    "require_id",
    "resolve",
    "resolve_resource",
    "source_meta",
    "when",
    "with_standard_codes",
]

LOINC = "http://loinc.org"

Resource = dict[str, Any]
"""One FHIR resource as parsed JSON."""
BundleIndex = dict[str, Resource]
"""``fullUrl`` and ``Type/id`` of every entry of one Bundle → its resource (see :func:`bundle_index`)."""
# Parsed JSON is always dicts and lists: exact-type checks (``type(x) is dict``) instead of ``Mapping``
# ABC checks keep this module inside the hot-path budget; the contract validates the result in one pass.

VALUE_KEYS = (
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "valueRange",
    "valueRatio",
    "valueSampledData",
    "valueTime",
    "valueDateTime",
    "valuePeriod",
)
_VALUE_KEY_SET = frozenset(VALUE_KEYS)
_PLAIN_DECIMAL: Final = re.compile(DECIMAL_PATTERN)
_TIME: Final = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?")  # FHIR ``time``
_JSON_KINDS: Final = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


# -- references ------------------------------------------------------------------------------------------
def reference_id(ref: Any) -> str | None:
    """The id in a Reference: ``Patient/123`` → 123, ``urn:uuid:abc`` → abc, absolute URLs too.

    None when there is no literal id: no ``reference``, a conditional reference (``Patient?identifier=…``,
    allowed in transactions, whose target the server finds later) or a contained one (``#p1``).
    """
    if type(ref) is not dict:
        return None
    text = ref.get("reference")
    if not isinstance(text, str) or not text or text[0] == "#" or "?" in text:
        return None
    if text.startswith("urn:uuid:"):
        return text[9:]
    if "_history" not in text:  # the common case: the last segment, without splitting them all
        return text.rstrip("/").rpartition("/")[2]
    parts = text.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":  # Patient/123/_history/2
        return parts[-3]
    return parts[-1]


def reference_type(ref: Any) -> str | None:
    """The target type a Reference states: from its text (``Practitioner/f007``, ``Practitioner?npi=…``,
    absolute URLs) or else its ``type`` element; None for ``urn:`` and contained references without one."""
    if type(ref) is not dict:
        return None
    text = ref.get("reference")
    if isinstance(text, str) and text and text[0] != "#" and not text.startswith("urn:"):
        if "?" in text:
            return text.split("?", 1)[0].rsplit("/", 1)[-1] or None
        parts = text.rstrip("/").split("/")
        if len(parts) >= 4 and parts[-2] == "_history":
            return parts[-4]
        if len(parts) >= 2:
            return parts[-2]
    stated = ref.get("type")
    return stated if isinstance(stated, str) else None


def bundle_index(bundle: Any) -> BundleIndex:
    """Index one Bundle's entries by ``fullUrl`` and by ``Type/id`` (the first entry wins on a clash).

    Entries without a resource (a transaction's DELETE) are skipped: the index only serves lookups, and
    each resource is mapped (or sent to the DLQ) on its own.
    """
    if type(bundle) is not dict or bundle.get("resourceType") != "Bundle":
        raise MappingError(
            f"expected a Bundle, got {_kind(bundle)} with resourceType "
            f"{bundle.get('resourceType') if type(bundle) is dict else None!r}"
        )
    index: BundleIndex = {}
    for entry in items(bundle.get("entry"), f"Bundle/{bundle.get('id')}.entry"):
        res = entry.get("resource") if type(entry) is dict else None
        if type(res) is not dict:
            continue
        full = entry.get("fullUrl")
        if isinstance(full, str) and full:
            index.setdefault(full, res)
        rtype, rid = res.get("resourceType"), res.get("id")
        if isinstance(rtype, str) and isinstance(rid, str) and rid:
            index.setdefault(f"{rtype}/{rid}", res)
    return index


def resolve_resource(ref: Any, index: BundleIndex) -> Resource | None:
    """The bundle entry a Reference points at, or None when it is not in the bundle."""
    if type(ref) is not dict:
        return None
    text = ref.get("reference")
    if not isinstance(text, str) or not text:
        return None
    hit = index.get(text)
    if hit is None and "/_history/" in text:  # a versioned reference finds the entry of that resource
        hit = index.get(text.split("/_history/", 1)[0])
    return hit


def resolve(ref: Any, index: BundleIndex | None) -> str | None:
    """The id a Reference points at: the target entry's own ``id`` when the bundle has it (``urn:uuid:X``
    → the id of the entry whose fullUrl is ``urn:uuid:X``), else what the reference itself says."""
    if index is not None and (hit := resolve_resource(ref, index)) is not None:
        rid = hit.get("id")
        if isinstance(rid, str) and rid:
            return rid
    return reference_id(ref)


# -- elements --------------------------------------------------------------------------------------------
def _kind(value: Any) -> str:
    return _JSON_KINDS.get(type(value), type(value).__name__)


def obj(value: Any, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object, else a MappingError naming ``where``."""
    if type(value) is not dict:
        raise MappingError(f"{where}: expected a JSON object, got {_kind(value)}")
    return value


def items(value: Any, where: str) -> list[Any]:
    """A repeating element: absent → empty; anything but an array is a MappingError naming ``where``."""
    if value is None:
        return []
    if type(value) is not list:
        raise MappingError(f"{where}: expected a JSON array, got {_kind(value)}")
    return value


def codings(concept: Any, where: str) -> list[dict[str, Any]]:
    """Every coding of a CodeableConcept that has a code, in source order (text-only codings are skipped)."""
    if type(concept) is not dict:
        raise MappingError(f"{where} must be a CodeableConcept object, got {_kind(concept)}")
    out = []
    for i, c in enumerate(items(concept.get("coding"), f"{where}.coding")):
        if type(c) is not dict:
            raise MappingError(f"{where}.coding[{i}]: expected a Coding object, got {_kind(c)}")
        if c.get("code") is not None:
            out.append({"system": c.get("system"), "code": str(c["code"]), "display": c.get("display")})
    return out


def fhir_decimal(value: Any, where: str) -> str:
    """A FHIR ``decimal`` as the exact plain-notation string the JSON wrote (``5.10`` → ``"5.10"``).

    A Decimal keeps its digits and scale, an int is written as it is, a float through ``repr`` (exact for what
    :func:`inlet.core.exact_json.loads` leaves a float). A JSON *string* holding a plain decimal (``"5.10"``) is
    not FHIR JSON, but it carries the digits exactly, so it passes as written (drift detection reports the type
    change; v1.0 accepted such strings too). MappingError naming ``where`` and the value for what cannot be
    carried exactly: any other string, a boolean or other JSON, not finite, absurdly long, or a float of more
    than 15 significant digits (it may have rounded when the JSON was parsed; 15 is what a double keeps for any
    value).
    """
    kind = type(value)
    if kind is float:
        if not math.isfinite(value):
            raise MappingError(f"{where}: {value!r} is not a finite decimal")
        text = repr(value)
        # A repr of at most 16 characters has at most 15 digits (it always has a '.' or an 'e').
        if len(text) > 16 and len(text.split("e")[0].lstrip("-").replace(".", "").strip("0")) > 15:
            raise MappingError(
                f"{where}: {text} is a binary float of more than 15 significant digits, which may "
                "have rounded the source's decimal; parse the JSON with inlet.core.exact_json.loads"
            )
        if "e" not in text:
            return text  # already plain notation (repr writes an exponent only below 1e-4 and from 1e16)
        value = Decimal(text)
    elif kind is int or (kind is str and _PLAIN_DECIMAL.fullmatch(value)):
        return str(value)  # an int's digits; a string already a plain decimal
    elif kind is not Decimal:
        raise MappingError(f"{where}: a FHIR decimal is a JSON number, got {_kind(value)} {value!r}"[:300])
    try:
        return plain_decimal(value)
    except ValueError as exc:
        raise MappingError(f"{where}: {str(value)[:40]} cannot be carried exactly: {exc}") from None


def _opt_decimal(value: Any, where: str) -> str | None:
    """:func:`fhir_decimal`, or None when the element is absent (the contract says whether it may be)."""
    return None if value is None else fhir_decimal(value, where)


def quantity(q: Any, where: str) -> dict[str, Any]:
    """A Quantity as the contract's tagged ``quantity`` value, its ``value`` an exact decimal string."""
    if type(q) is not dict or "value" not in q:
        raise MappingError(f"{where} must be a Quantity with a value")
    return {
        "type": "quantity",
        "value": fhir_decimal(q["value"], f"{where}.value"),
        "unit": q.get("unit"),
        "system": q.get("system"),
        "code": q.get("code"),
        "comparator": q.get("comparator"),
    }


def when(value: Any, zone: str | None, where: str) -> Instant:
    """core.time's normalise, with the element path in front of its message."""
    try:
        return normalise(value, zone)
    except MappingError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def period(p: Any, zone: str | None, where: str) -> tuple[Instant | None, Instant | None]:
    """A Period's start and end (each None when open)."""
    p = obj(p, where)
    start, end = p.get("start"), p.get("end")
    return (
        when(start, zone, f"{where}.start") if start is not None else None,
        when(end, zone, f"{where}.end") if end is not None else None,
    )


def require_id(res: Resource, rtype: str) -> str:
    """The resource's id; an event is keyed on it, so a resource without one is a MappingError."""
    rid = res.get("id")
    if not isinstance(rid, str) or not rid:
        raise MappingError(
            f"{rtype}/{rid}: no id (a transaction entry the server has not stored yet has none; "
            "map what the server returns)"
        )
    return rid


def source_meta(res: Resource, zone: str | None, where: str) -> tuple[datetime | None, Any]:
    """``source_last_updated`` (UTC) and ``source_version`` (``versionId``, else ``lastUpdated``)."""
    meta = res.get("meta")
    if meta is None:
        return None, None
    meta = obj(meta, f"{where}.meta")
    lu = meta.get("lastUpdated")
    return (when(lu, zone, f"{where}.meta.lastUpdated").utc if lu else None), meta.get("versionId") or lu


# -- Observation -----------------------------------------------------------------------------------------
def _value(res: Resource, zone: str | None, where: str) -> dict[str, Any] | None:
    """The tagged value of ``value[x]``; None when there is none; MappingError for unknown kinds."""
    if _VALUE_KEY_SET.isdisjoint(res):
        # Only scanned when no known value[x] is present: FHIR allows one value[x] per element.
        if unknown := [k for k in res if k.startswith("value")]:
            raise MappingError(
                f"{where}: unsupported value type {unknown[0]} (clinical.observation v2.0 "
                f"supports {', '.join(VALUE_KEYS)})"
            )
        return None
    if (q := res.get("valueQuantity")) is not None:
        return quantity(q, f"{where}.valueQuantity")
    if (cc := res.get("valueCodeableConcept")) is not None:
        return {"type": "coded", "coding": codings(cc, f"{where}.valueCodeableConcept"), "text": cc.get("text")}
    for key, kind in (("valueString", "string"), ("valueBoolean", "boolean"), ("valueInteger", "integer")):
        if key in res:
            return {"type": kind, "value": res[key]}
    if "valueTime" in res:
        t = res["valueTime"]
        if not isinstance(t, str) or not _TIME.fullmatch(t):
            raise MappingError(f"{where}.valueTime: {t!r} is not a FHIR time (HH:MM:SS, no date, no zone)")
        return {"type": "time", "value": t}
    if (r := res.get("valueRange")) is not None:
        r = obj(r, f"{where}.valueRange")
        return {
            "type": "range",
            "low": quantity(r["low"], f"{where}.valueRange.low") if r.get("low") else None,
            "high": quantity(r["high"], f"{where}.valueRange.high") if r.get("high") else None,
        }
    if (r := res.get("valueRatio")) is not None:
        r = obj(r, f"{where}.valueRatio")
        return {
            "type": "ratio",
            "numerator": quantity(r["numerator"], f"{where}.valueRatio.numerator") if r.get("numerator") else None,
            "denominator": quantity(r["denominator"], f"{where}.valueRatio.denominator")
            if r.get("denominator")
            else None,
        }
    if (sd := res.get("valueSampledData")) is not None:
        at = f"{where}.valueSampledData"
        sd = obj(sd, at)
        return {
            "type": "sampled_data",
            "origin": quantity(sd.get("origin"), f"{at}.origin"),
            "period_ms": _opt_decimal(sd.get("period"), f"{at}.period"),
            "factor": _opt_decimal(sd.get("factor"), f"{at}.factor"),
            "lower_limit": _opt_decimal(sd.get("lowerLimit"), f"{at}.lowerLimit"),
            "upper_limit": _opt_decimal(sd.get("upperLimit"), f"{at}.upperLimit"),
            "dimensions": sd.get("dimensions"),
            "data": sd.get("data"),
        }
    if "valueDateTime" in res:
        inst = when(res["valueDateTime"], zone, f"{where}.valueDateTime")
        return {"type": "datetime", "value": inst.utc, "precision": inst.precision}
    if (p := res.get("valuePeriod")) is not None:
        start, end = period(p, zone, f"{where}.valuePeriod")
        return {"type": "period", "start": start.utc if start else None, "end": end.utc if end else None}
    return None  # a known value[x] that is JSON null: no value


def _absent(res: Resource, where: str) -> str | None:
    dar = res.get("dataAbsentReason")
    if dar is None:
        return None
    found = codings(dar, f"{where}.dataAbsentReason")
    text = dar.get("text")
    return next((c["code"] for c in found if c["code"]), text if isinstance(text, str) else None)


def _effective(res: Resource, zone: str | None, where: str) -> dict[str, Any]:
    if (dt := res.get("effectiveDateTime") or res.get("effectiveInstant")) is not None:
        # The path says ``.effective`` for both: DLQ messages in recorded goldens depend on it.
        inst = when(dt, zone, f"{where}.effective")
        return {"effective_start": inst.utc, "effective_precision": inst.precision}
    start: Instant | None = None
    end: Instant | None = None
    if (p := res.get("effectivePeriod")) is not None:
        start, end = period(p, zone, f"{where}.effectivePeriod")
    elif (timing := res.get("effectiveTiming")) is not None:
        timing = obj(timing, f"{where}.effectiveTiming")
        if events := items(timing.get("event"), f"{where}.effectiveTiming.event"):
            times = sorted(
                (when(e, zone, f"{where}.effectiveTiming.event[{i}]") for i, e in enumerate(events)),
                key=lambda inst: inst.utc,
            )
            start, end = times[0], times[-1] if len(times) > 1 else None
        elif (repeat := timing.get("repeat")) is not None and (
            bounds := obj(repeat, f"{where}.effectiveTiming.repeat").get("boundsPeriod")
        ) is not None:
            start, end = period(bounds, zone, f"{where}.effectiveTiming.repeat.boundsPeriod")
    else:
        return {}
    first = start or end
    return {
        "effective_start": start.utc if start else None,
        "effective_end": end.utc if end else None,
        "effective_precision": first.precision if first else None,
    }


def map_observation(res: Resource, zone: str | None, *, index: BundleIndex | None = None) -> ObservationV2:
    """Map one Observation resource to ``clinical.observation`` v2.0 (published as v1.0 too, by the contract's
    converter); raises MappingError / pydantic ValidationError on bad input.

    ``index`` (from :func:`bundle_index`) resolves ``subject``, ``encounter`` and ``hasMember`` within a bundle.
    """
    if type(res) is not dict or res.get("resourceType") != "Observation":
        got = res.get("resourceType") if type(res) is dict else _kind(res)
        raise MappingError(f"expected an Observation, got resourceType {got!r}")
    fast = _observation_one_pass(res, zone, index)
    if fast is not None:
        return fast
    fields = _observation_fields(res, zone, index)
    # Validated once: the mapper's own checks plus the few left (prechecked_observation) build the model directly;
    # anything they do not vouch for goes through pydantic, whose refusal is the record's DLQ reason.
    return prechecked_observation(fields) or ObservationV2.model_validate(fields)


def map_observation_checked(res: Resource, zone: str | None, *, index: BundleIndex | None = None) -> ObservationV2:
    """:func:`map_observation` the long way: every field built by the full mapper and validated by pydantic. The
    reference the fast paths are tested against (tests/connectors/fhir/test_fhir_prechecked.py)."""
    if type(res) is not dict or res.get("resourceType") != "Observation":
        got = res.get("resourceType") if type(res) is dict else _kind(res)
        raise MappingError(f"expected an Observation, got resourceType {got!r}")
    return ObservationV2.model_validate(_observation_fields(res, zone, index))


def _observation_fields(res: Resource, zone: str | None, index: BundleIndex | None) -> dict[str, Any]:
    """The input of ``ObservationV2`` for one Observation: MappingError for what the contract cannot carry."""
    oid = require_id(res, "Observation")
    where = f"Observation/{oid}"
    last_updated, version = source_meta(res, zone, where)
    components = []
    for i, raw in enumerate(items(res.get("component"), f"{where}.component")):
        at = f"{where}.component[{i}]"
        c = obj(raw, at)
        code = c.get("code")
        components.append(
            {
                "code": codings(code, f"{at}.code") if code is not None else [],
                "value": _value(c, zone, at),
                "data_absent_reason": _absent(c, at),
            }
        )
    code = res.get("code")
    ref = reference_id if index is None else lambda r: resolve(r, index)
    return {
        "observation_id": oid,
        "patient_id": ref(res.get("subject")),
        "encounter_id": ref(res.get("encounter")),
        "status": res.get("status"),
        "category": [
            c["code"]
            for i, cat in enumerate(items(res.get("category"), f"{where}.category"))
            for c in codings(cat, f"{where}.category[{i}]")
        ],
        "code": codings(code, f"{where}.code") if code is not None else [],
        "code_text": code.get("text") if type(code) is dict else None,
        **_effective(res, zone, where),
        "issued": when(res["issued"], zone, f"{where}.issued").utc if res.get("issued") else None,
        "value": _value(res, zone, where),
        "data_absent_reason": _absent(res, where),
        "components": components,
        "has_member": [mid for m in items(res.get("hasMember"), f"{where}.hasMember") if (mid := ref(m))],
        "source_last_updated": last_updated,
        "source_version": version,
    }


# -- validating once -----------------------------------------------------------------------------------------
_OBS_FIELDS: Final = tuple(ObservationV2.model_fields)
_STATUSES: Final = frozenset(get_args(ObservationV2.model_fields["status"].annotation))
_PRECISIONS: Final = frozenset(get_args(Precision))
_COMPARATORS: Final = frozenset(get_args(get_args(QuantityValue.model_fields["comparator"].annotation)[0]))
_CODING_KEYS: Final = frozenset(("system", "code", "display"))
_QUANTITY_KEYS: Final = frozenset(("type", "value", "unit", "system", "code", "comparator"))
_CODED_KEYS: Final = frozenset(("type", "coding", "text"))
_SIMPLE_VALUE_KEYS: Final = frozenset(("type", "value"))
_PART_KEYS: Final = frozenset(("code", "value", "data_absent_reason"))
_SIMPLE_VALUES: Final = {"string": (StringValue, str), "boolean": (BooleanValue, bool), "integer": (IntegerValue, int)}


def _checked_codings(found: Any) -> list[Coding] | None:
    """:func:`codings`' dicts as ``Coding`` instances, or None when a ``system``/``display`` is not a string."""
    out = []
    for c in found:
        system, display = c["system"], c["display"]
        if (system is not None and type(system) is not str) or (display is not None and type(display) is not str):
            return None
        out.append(checked_instance(Coding, c, _CODING_KEYS))  # code: str() in codings()
    return out


def _checked_value(value: Any) -> Any:
    """The contract part of a :func:`_value` result, or ``...`` when pydantic has to judge it (rarer kinds too)."""
    if value is None:
        return None
    kind = value["type"]
    if kind == "quantity":
        number, unit, system, code, comparator = (
            value["value"],
            value["unit"],
            value["system"],
            value["code"],
            value["comparator"],
        )
        if (
            type(number) is str
            and _PLAIN_DECIMAL.fullmatch(number)
            and (unit is None or type(unit) is str)
            and (system is None or type(system) is str)
            and (code is None or type(code) is str)
            and (comparator is None or (type(comparator) is str and comparator in _COMPARATORS))
        ):
            return checked_instance(QuantityValue, value, value.keys())
        return ...
    if kind == "coded":
        coding, text = _checked_codings(value["coding"]), value["text"]
        if coding is None or (text is not None and type(text) is not str):
            return ...
        return checked_instance(CodedValue, {"type": "coded", "coding": coding, "text": text}, value.keys())
    simple = _SIMPLE_VALUES.get(kind)
    if simple is not None and type(value["value"]) is simple[1]:
        return checked_instance(simple[0], value, value.keys())
    return ...


def prechecked_observation(fields: dict[str, Any]) -> ObservationV2 | None:
    """The ``ObservationV2`` of :func:`map_observation`'s fields when every value is one the contract takes as it
    is — what the mapper built is checked for the rest of the contract's rules (types, literals, lengths) — else
    None, and ``model_validate`` decides (and words the refusal). Equal to the validated model, byte for byte
    when serialised (tests/connectors/fhir/test_fhir_prechecked.py)."""
    status, code_text, version = fields["status"], fields["code_text"], fields["source_version"]
    if (
        type(status) is not str
        or status not in _STATUSES
        or (code_text is not None and type(code_text) is not str)
        or (version is not None and type(version) is not str)
        or not fields["code"]
    ):
        return None
    for name in ("effective_start", "effective_end", "issued", "source_last_updated"):
        moment = fields.get(name)
        if moment is not None and type(moment) is not datetime:
            return None
    precision = fields.get("effective_precision")
    if precision is not None and precision not in _PRECISIONS:
        return None
    code = _checked_codings(fields["code"])
    value = _checked_value(fields["value"])
    if code is None or value is ...:
        return None
    components = []
    for c in fields["components"]:
        part_code = _checked_codings(c["code"]) if c["code"] else None
        part_value = _checked_value(c["value"])
        if part_code is None or part_value is ...:
            return None
        components.append(
            checked_instance(
                Component,
                {"code": part_code, "value": part_value, "data_absent_reason": c["data_absent_reason"]},
                c.keys(),
            )
        )
    values = dict.fromkeys(_OBS_FIELDS)
    values.update(fields)  # the mapper's strings, lists of strings and datetimes, as validation keeps them
    values["code"], values["value"], values["components"] = code, value, components
    return checked_instance(ObservationV2, values, fields.keys())


_FIXED_KEYS: Final = frozenset(_OBS_FIELDS) - {"effective_start", "effective_end", "effective_precision"}
_STARTED_KEYS: Final = _FIXED_KEYS | {"effective_start", "effective_precision"}
_ONE_PASS_LEFT_OUT: Final = ("valueTime", "valueDateTime")  # value kinds left to the full mapper (as are
# valueRange, valueRatio, valueSampledData, valuePeriod, dataAbsentReason, effectivePeriod and effectiveTiming)


def _codings_one_pass(concept: Any) -> list[Coding] | None:
    """:func:`codings` of a CodeableConcept straight into ``Coding`` instances; None for anything the full mapper
    has to judge or word (not an object, ``coding`` not an array of objects, a non-string system or display)."""
    if type(concept) is not dict:
        return None
    found = concept.get("coding")
    if found is None:
        return []
    if type(found) is not list:
        return None
    out = []
    for c in found:
        if type(c) is not dict:
            return None
        code = c.get("code")
        if code is None:
            continue
        system, display = c.get("system"), c.get("display")
        if (system is not None and type(system) is not str) or (display is not None and type(display) is not str):
            return None
        key = (system, str(code), display)
        coding = _CODINGS.get(key)
        if coding is None:
            if len(_CODINGS) >= _CODINGS_KEPT:
                _CODINGS.clear()
            coding = _CODINGS[key] = checked_instance(
                Coding, {"system": system, "code": key[1], "display": display}, _CODING_KEYS
            )
        out.append(coding)
    return out


_CODINGS: dict[tuple[str | None, str, str | None], Coding] = {}
"""The ``Coding`` instances made so far, by (system, code, display): a feed repeats a few hundred codes, and a
contract part is immutable, so events share them (validation would make equal copies)."""
_CODINGS_KEPT: Final = 4096


def _category_codes(cats: Any) -> list[str] | None:
    """The codes of ``category`` (every coding with a code, as :func:`map_observation` lists them); None for
    anything the full mapper has to word."""
    out: list[str] = []
    if cats is None:
        return out
    if type(cats) is not list:
        return None
    for cat in cats:
        found = cat.get("coding") if type(cat) is dict else ...
        if found is None:
            continue
        if type(found) is not list:
            return None
        for c in found:
            if type(c) is not dict:
                return None
            if (code := c.get("code")) is not None:
                out.append(str(code))
    return out


def _value_one_pass(res: dict[str, Any]) -> Any:
    """:func:`_value`'s contract part for the common kinds (quantity, coded, string, boolean, integer, none);
    ``...`` for the rest and for anything the full mapper has to judge or word."""
    if _VALUE_KEY_SET.isdisjoint(res):
        return ... if any(k.startswith("value") for k in res) else None  # an unknown value[x]: its error
    if (q := res.get("valueQuantity")) is not None:
        if type(q) is not dict or "value" not in q:
            return ...
        number = q["value"]
        kind = type(number)
        if kind is float and math.isfinite(number):
            text = repr(number)  # fhir_decimal's float branch, without the rare cases it words or rewrites
            if len(text) > 16 or "e" in text:
                return ...
        elif kind is int:
            text = str(number)
        elif kind is Decimal:
            try:
                text = plain_decimal(number)  # fhir_decimal's Decimal branch
            except ValueError:  # not finite, or absurdly long: the full mapper words it
                return ...
            if not _PLAIN_DECIMAL.fullmatch(text):
                return ...
        else:
            return ...
        unit, system, code, comparator = q.get("unit"), q.get("system"), q.get("code"), q.get("comparator")
        if (
            (unit is not None and type(unit) is not str)
            or (system is not None and type(system) is not str)
            or (code is not None and type(code) is not str)
            or (comparator is not None and (type(comparator) is not str or comparator not in _COMPARATORS))
        ):
            return ...
        fields = {
            "type": "quantity",
            "value": text,
            "unit": unit,
            "system": system,
            "code": code,
            "comparator": comparator,
        }
        return checked_instance(QuantityValue, fields, _QUANTITY_KEYS)
    if (cc := res.get("valueCodeableConcept")) is not None:
        coding = _codings_one_pass(cc)
        label = cc.get("text") if coding is not None else None
        if coding is None or (label is not None and type(label) is not str):
            return ...
        return checked_instance(CodedValue, {"type": "coded", "coding": coding, "text": label}, _CODED_KEYS)
    for key, (cls, kind) in _SIMPLE_KEYS:
        if key in res:
            value = res[key]
            if type(value) is not kind:
                return ...
            return checked_instance(cls, {"type": cls.model_fields["type"].default, "value": value}, _SIMPLE_VALUE_KEYS)
    return ...  # the other kinds (or a known value[x] that is null): the full mapper


_SIMPLE_KEYS: Final = (
    ("valueString", (StringValue, str)),
    ("valueBoolean", (BooleanValue, bool)),
    ("valueInteger", (IntegerValue, int)),
)


def _observation_one_pass(res: dict[str, Any], zone: str | None, index: BundleIndex | None) -> ObservationV2 | None:
    """:func:`map_observation` for the common shape in one pass, its values checked as the contract would and the
    model built from them; None (the full mapper decides, and words any refusal) for every other shape.
    Equal to the full mapper's validated model (tests/connectors/fhir/test_fhir_prechecked.py)."""
    oid = res.get("id")
    status = res.get("status")
    if type(oid) is not str or not oid or type(status) is not str or status not in _STATUSES:
        return None
    if res.get("dataAbsentReason") is not None or res.get("effectivePeriod") is not None:
        return None
    try:
        meta = res.get("meta")
        last_updated = version = None
        if meta is not None:
            if type(meta) is not dict:
                return None
            lu = meta.get("lastUpdated")
            last_updated = normalise(lu, zone).utc if lu else None
            version = meta.get("versionId") or lu
            if version is not None and type(version) is not str:
                return None
        dt = res.get("effectiveDateTime") or res.get("effectiveInstant")
        effective = normalise(dt, zone) if dt is not None else None
        issued = normalise(res["issued"], zone).utc if res.get("issued") else None
    except Exception:  # a timestamp the full mapper refuses, naming the element
        return None
    if effective is None and res.get("effectiveTiming") is not None:
        return None
    code: Any = res.get("code")
    codes = _codings_one_pass(code) if code is not None else None
    if not codes:  # no code at all is the contract's refusal (min_length 1), the full mapper's to word
        return None
    code_text = code.get("text")
    if code_text is not None and type(code_text) is not str:
        return None
    category = _category_codes(res.get("category"))
    if category is None:
        return None
    value = _value_one_pass(res)
    if value is ...:
        return None
    components = []
    parts = res.get("component")
    if parts is not None:
        if type(parts) is not list:
            return None
        for c in parts:
            if type(c) is not dict or c.get("dataAbsentReason") is not None:
                return None
            part_code = _codings_one_pass(c.get("code"))
            part_value = _value_one_pass(c)
            if not part_code or part_value is ...:
                return None
            part = {"code": part_code, "value": part_value, "data_absent_reason": None}
            components.append(checked_instance(Component, part, _PART_KEYS))
    ref = reference_id if index is None else lambda r: resolve(r, index)
    members = res.get("hasMember")
    if members is not None and type(members) is not list:
        return None
    values: dict[str, Any] = {
        "observation_id": oid,
        "patient_id": ref(res.get("subject")),
        "encounter_id": ref(res.get("encounter")),
        "status": status,
        "category": category,
        "code": codes,
        "code_text": code_text,
        "effective_start": effective.utc if effective is not None else None,
        "effective_end": None,
        "effective_precision": effective.precision if effective is not None else None,
        "issued": issued,
        "value": value,
        "data_absent_reason": None,
        "components": components,
        "has_member": [mid for m in members if (mid := ref(m))] if members else [],
        "source_last_updated": last_updated,
        "source_version": version,
    }
    return checked_instance(ObservationV2, values, _STARTED_KEYS if effective is not None else _FIXED_KEYS)


_C = TypeVar("_C", bound=Contract)


def with_standard_codes(obs: _C, local_system: str, table: dict[str, tuple[str, str]], system: str = LOINC) -> _C:
    """``obs`` with a ``system`` coding put first for each of its ``local_system`` codes in ``table``
    (local code → (standard code, display)); the local coding stays, a standard code already there is not
    repeated. The customer plugins' local-code quirk: consumers query by LOINC.

    Any event may be passed: only ``clinical.observation`` events (of any major: the family maps to v2.0,
    its v1.0 event is converted from it, codes included) are changed, the rest come back as they are. So a
    plugin calls it on every mapped event and does not break when the family moves to a new major (an
    ``isinstance(e, ObservationV1)`` check silently stopped matching when v2.0 arrived)."""
    codes = getattr(obs, "code", None)
    if obs.contract_name != "clinical.observation" or not isinstance(codes, list):
        return obs
    have = {c.code for c in codes if c.system == system}
    extra: list[Coding] = [
        Coding(system=system, code=code, display=display)
        for c in codes
        if c.system == local_system and c.code in table
        for code, display in (table[c.code],)
        if code not in have
    ]
    return obs.model_copy(update={"code": [*extra, *codes]}) if extra else obs  # model_copy keeps the type
