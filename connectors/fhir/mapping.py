"""FHIR R4 Observation → ``clinical.observation`` v1.0 (the mapping rules are in the contract's docstring).

Pure functions of a resource and the integration's zone: no I/O, every timestamp through core.time.
An element the contract cannot represent (an unknown ``value[x]``) is a :class:`MappingError` naming it,
so the record goes to the DLQ instead of being half-mapped.
"""

from __future__ import annotations

from typing import Any

from contracts.clinical_observation import ObservationV1
from core.errors import MappingError
from core.time import Instant, normalise

__all__ = ["VALUE_KEYS", "map_observation", "reference_id"]

Resource = dict[str, Any]
# Parsed JSON is always dicts and lists: exact-type checks (``type(x) is dict``) instead of ``Mapping``
# ABC checks keep this module inside the hot-path budget; the contract validates the result in one pass.

VALUE_KEYS = ("valueQuantity", "valueCodeableConcept", "valueString", "valueBoolean", "valueInteger",
              "valueRange", "valueRatio", "valueSampledData", "valueTime", "valueDateTime", "valuePeriod")
_VALUE_KEY_SET = frozenset(VALUE_KEYS)


def reference_id(ref: Any) -> str | None:
    """The id in a Reference: ``Patient/123`` → 123, ``urn:uuid:abc`` → abc, absolute URLs too."""
    if type(ref) is not dict:
        return None
    text = ref.get("reference")
    if not isinstance(text, str) or not text:
        return None
    if text.startswith("urn:uuid:"):
        return text[9:]
    parts = text.rstrip("/").split("/")
    if len(parts) >= 4 and parts[-2] == "_history":  # Patient/123/_history/2
        return parts[-3]
    return parts[-1]


def _codings(concept: Any, where: str) -> list[dict[str, Any]]:
    if type(concept) is not dict:
        raise MappingError(f"{where} must be a CodeableConcept object, got {type(concept).__name__}")
    return [{"system": c.get("system"), "code": str(c["code"]), "display": c.get("display")}
            for c in concept.get("coding") or () if type(c) is dict and c.get("code") is not None]


def _quantity(q: Any, where: str) -> dict[str, Any]:
    if type(q) is not dict or "value" not in q:
        raise MappingError(f"{where} must be a Quantity with a value")
    return {"type": "quantity", "value": q["value"], "unit": q.get("unit"), "system": q.get("system"),
            "code": q.get("code"), "comparator": q.get("comparator")}


def _when(value: Any, zone: str | None, where: str) -> Instant:
    try:
        return normalise(value, zone)
    except MappingError as exc:
        raise type(exc)(f"{where}: {exc}") from None


def _value(res: Resource, zone: str | None, where: str) -> dict[str, Any] | None:
    """The tagged value of ``value[x]``; None when there is none; MappingError for unknown kinds."""
    if _VALUE_KEY_SET.isdisjoint(res) and (unknown := [k for k in res if k.startswith("value")]):
        # Only scanned when no known value[x] is present: FHIR allows one value[x] per element.
        raise MappingError(f"{where}: unsupported value type {unknown[0]} (clinical.observation v1.0 supports "
                           f"{', '.join(VALUE_KEYS)})")
    if (q := res.get("valueQuantity")) is not None:
        return _quantity(q, f"{where}.valueQuantity")
    if (cc := res.get("valueCodeableConcept")) is not None:
        return {"type": "coded", "coding": _codings(cc, f"{where}.valueCodeableConcept"), "text": cc.get("text")}
    for key, kind in (("valueString", "string"), ("valueBoolean", "boolean"), ("valueInteger", "integer"),
                      ("valueTime", "time")):
        if key in res:
            return {"type": kind, "value": res[key]}
    if (r := res.get("valueRange")) is not None:
        return {"type": "range",
                "low": _quantity(r["low"], f"{where}.valueRange.low") if r.get("low") else None,
                "high": _quantity(r["high"], f"{where}.valueRange.high") if r.get("high") else None}
    if (r := res.get("valueRatio")) is not None:
        return {"type": "ratio",
                "numerator": _quantity(r["numerator"], f"{where}.valueRatio.numerator")
                if r.get("numerator") else None,
                "denominator": _quantity(r["denominator"], f"{where}.valueRatio.denominator")
                if r.get("denominator") else None}
    if (sd := res.get("valueSampledData")) is not None:
        return {"type": "sampled_data", "origin": _quantity(sd.get("origin"), f"{where}.valueSampledData.origin"),
                "period_ms": sd.get("period"), "factor": sd.get("factor"), "dimensions": sd.get("dimensions"),
                "data": sd.get("data")}
    if "valueDateTime" in res:
        inst = _when(res["valueDateTime"], zone, f"{where}.valueDateTime")
        return {"type": "datetime", "value": inst.utc, "precision": inst.precision}
    if (p := res.get("valuePeriod")) is not None:
        return {"type": "period",
                "start": _when(p["start"], zone, f"{where}.valuePeriod.start").utc if p.get("start") else None,
                "end": _when(p["end"], zone, f"{where}.valuePeriod.end").utc if p.get("end") else None}
    return None


def _absent(res: Resource) -> str | None:
    dar = res.get("dataAbsentReason")
    if type(dar) is not dict:
        return None
    codes = [c.get("code") for c in dar.get("coding") or () if type(c) is dict]
    return next((str(c) for c in codes if c), dar.get("text"))


def map_observation(res: Resource, zone: str | None) -> ObservationV1:
    """Map one Observation resource; raises MappingError / pydantic ValidationError on bad input."""
    if res.get("resourceType") != "Observation":
        raise MappingError(f"expected an Observation, got resourceType {res.get('resourceType')!r}")
    oid = res.get("id")
    where = f"Observation/{oid}"
    effective: dict[str, Any] = {}
    if (dt := res.get("effectiveDateTime") or res.get("effectiveInstant")) is not None:
        inst = _when(dt, zone, f"{where}.effective")
        effective = {"effective_start": inst.utc, "effective_precision": inst.precision}
    elif (period := res.get("effectivePeriod")) is not None:
        start = _when(period["start"], zone, f"{where}.effectivePeriod.start") if period.get("start") else None
        end = _when(period["end"], zone, f"{where}.effectivePeriod.end") if period.get("end") else None
        effective = {"effective_start": start.utc if start else None, "effective_end": end.utc if end else None,
                     "effective_precision": (start or end).precision if (start or end) else None}
    elif (timing := res.get("effectiveTiming")) is not None:
        events = timing.get("event") or []
        if events:
            inst = _when(events[0], zone, f"{where}.effectiveTiming.event[0]")
            effective = {"effective_start": inst.utc, "effective_precision": inst.precision}
    meta = res.get("meta") or {}
    last_updated = _when(meta["lastUpdated"], zone, f"{where}.meta.lastUpdated").utc \
        if meta.get("lastUpdated") else None
    components = [
        {"code": _codings(c.get("code"), f"{where}.component[{i}].code"),
         "value": _value(c, zone, f"{where}.component[{i}]"), "data_absent_reason": _absent(c)}
        for i, c in enumerate(res.get("component") or ())
    ]
    code = res.get("code")
    return ObservationV1.model_validate({
        "observation_id": oid,
        "patient_id": reference_id(res.get("subject")),
        "encounter_id": reference_id(res.get("encounter")),
        "status": res.get("status"),
        "category": [c["code"] for cat in res.get("category") or () for c in _codings(cat, f"{where}.category")],
        "code": _codings(code, f"{where}.code") if code is not None else [],
        "code_text": code.get("text") if type(code) is dict else None,
        **effective,
        "issued": _when(res["issued"], zone, f"{where}.issued").utc if res.get("issued") else None,
        "value": _value(res, zone, where),
        "data_absent_reason": _absent(res),
        "components": components,
        "has_member": [i for m in res.get("hasMember") or () if (i := reference_id(m))],
        "source_last_updated": last_updated,
        "source_version": meta.get("versionId") or meta.get("lastUpdated"),
    })
