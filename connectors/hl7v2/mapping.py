"""HL7 v2 → contracts: ADT → ``clinical.patient`` + ``clinical.encounter``, ORU^R01 OBX → ``clinical.observation``.

Every timestamp (DTM of any precision, with or without an offset) goes through ``core.time.normalise`` in the
sending facility's zone (the integration's ``zone``); dates of birth stay calendar dates.

ADT (``map_adt``):
- A01 admit → encounter ``in-progress``; A04 register → ``arrived``; A08 update → ``finished`` when PV1-45
  (discharge) is set, else ``in-progress``; A03 discharge → ``finished``; A11 cancel admit / registration →
  ``cancelled``; A13 cancel discharge → ``in-progress``. Each also emits the patient (PID), except A11/A13.
- patient: ``patient_id`` is PID-3.1 of the first repetition (with PID-2 as fallback), ``identifiers`` every
  PID-3 repetition (system = CX.4.1 assigning authority); PID-8 → gender (M/F/O/U; A → other, N → unknown);
  PID-7 → birth date (calendar, precision year/month/day); PID-29/30 → deceased; PID-11 home address
  (XAD.7 ``H``, else the first not ``O``ld) → country (XAD.6) and postal prefix (XAD.5). Minimised like FHIR.
- encounter: ``encounter_id`` PV1-19.1 (visit number), else PID-18.1 (account); without either no encounter
  event is emitted (the patient still is). PV1-2 class → v3 ActCode (I IMP, O AMB, E EMER, P PRENC,
  R AMB, B AMB); PV1-10 → type (v2 table 0069); PV1-44/45 → period.

ADT^A40 (``map_merge``): each PID / MRG pair → ``clinical.patient_merge`` (survivor PID-3.1, retired MRG-1.1 or
MRG-4, every MRG-1 identifier, EVN-2 / MSH-7 as ``merged_at``); no ``clinical.patient`` event (an A08 carries the
survivor's demographics). An MRG without a PID before it, or with no identifier, is a MappingError.

ORU (``map_oru``): one observation per OBX, ``observation_id`` = ``<filler or placer order number, else
MSH-10>/<OBX-4 sub-id or OBX-1 set id>/<OBX-3.1>`` so a corrected result (OBX-11 ``C``) keeps its id. OBX-2
NM → quantity (exact decimal string; unit OBX-6, UCUM when OBX-6.3 says so), SN → quantity with comparator,
range or ratio, ST/TX/FT → string (repetitions joined by a line break), CE/CWE/CNE/CF → coded, DT/DTM/TS →
date-time. Other value types (ED, RP, …) make the message a MappingError. OBX-11: F final, C corrected,
P/R/S preliminary, X cancelled, I/O registered, D/W entered-in-error, else unknown. OBX-14 (or OBR-7) →
effective time, OBR-22 → issued. ORU maps to ``clinical.observation`` 3.0 (dual-published as 2.0 and 1.0).

OBX-7 reference range (``reference_range``) → one range whose ``text`` is OBX-7 as sent, always, plus inclusive
bounds in OBX-6's unit when it is one of HL7's numeric forms: ``low-high`` (``3.5-5.0``, ``-2--1``, also
``80 to 95``), ``<high`` / ``<=high``, ``>low`` / ``>=low``. Anything else (``Negative``, ``3,5-5,0``, ``70_105``,
a low above its high) stays text only: a bound is never guessed, and the message is never failed for its range.
``<5`` gives ``high`` 5 because FHIR's bounds are inclusive; the text keeps the strict ``<``.
OBX-8 abnormal flags (``interpretation``, repeating) → one concept per repetition: a table 0078 code that FHIR's
v3 ObservationInterpretation also has (H, L, HH, LL, A, AA, N, <, > …) in that system, any other code in
``v2-0078`` (or the coding system OBX-8.3 names); OBX-8.2 is the text.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from inlet.contracts.base import Contract, plain_decimal
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_observation import Coding
from inlet.contracts.clinical_observation_v3 import INTERPRETATION_V3, ObservationV3
from inlet.contracts.clinical_patient import PatientV1
from inlet.contracts.clinical_patient_merge import PatientMergeV1
from inlet.core.errors import MappingError
from inlet.core.time import Instant, normalise

from .parser import Message, Segment

__all__ = [
    "ADT_EVENTS",
    "Unsupported",
    "hl7_time",
    "interpretation",
    "map_adt",
    "map_merge",
    "map_message",
    "map_oru",
    "message_type",
    "reference_range",
]

ADT_EVENTS: Final = {
    "A01": "in-progress",
    "A04": "arrived",
    "A08": None,
    "A03": "finished",
    "A11": "cancelled",
    "A13": "in-progress",
}
_CLASS: Final = {"I": "IMP", "O": "AMB", "E": "EMER", "P": "PRENC", "R": "AMB", "B": "AMB"}
_GENDER: Final = {"M": "male", "F": "female", "O": "other", "U": "unknown", "A": "other", "N": "unknown"}
_STATUS: Final = {
    "F": "final",
    "C": "corrected",
    "P": "preliminary",
    "R": "preliminary",
    "S": "preliminary",
    "X": "cancelled",
    "I": "registered",
    "O": "registered",
    "D": "entered-in-error",
    "W": "entered-in-error",
}
_SYSTEMS: Final = {
    "LN": "http://loinc.org",
    "SCT": "http://snomed.info/sct",
    "SNM": "http://snomed.info/sct",
    "UCUM": "http://unitsofmeasure.org",
    "L": None,
    "99ZZZ": None,
}
_ACTCODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_NUMBER: Final = r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_RANGE: Final = re.compile(rf"({_NUMBER})(?:\s*-\s*|\s+to\s+)({_NUMBER})", re.IGNORECASE)
_BOUND: Final = re.compile(rf"(<=|>=|<|>)\s*({_NUMBER})")
_V2_0078: Final = "http://terminology.hl7.org/CodeSystem/v2-0078"
_FLAGS_V3: Final = {  # HL7 table 0078 codes that FHIR's v3 ObservationInterpretation also has (display: R4's)
    "<": "Off scale low",
    ">": "Off scale high",
    "A": "Abnormal",
    "AA": "Critical abnormal",
    "B": "Better",
    "D": "Significant change down",
    "DET": "Detected",
    "H": "High",
    "HH": "Critical high",
    "I": "Intermediate",
    "IND": "Indeterminate",
    "L": "Low",
    "LL": "Critical low",
    "MS": "moderately susceptible",
    "N": "Normal",
    "ND": "Not detected",
    "NEG": "Negative",
    "NR": "Non-reactive",
    "POS": "Positive",
    "R": "Resistant",
    "RR": "Reactive",
    "S": "Susceptible",
    "U": "Significant change up",
    "VS": "very susceptible",
    "W": "Worse",
}
_DTM: Final = re.compile(
    r"([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2}(?:\.[0-9]{1,4})?)?"
    r"([+-][0-9]{4})?"
)


class Unsupported(MappingError):
    """A message type or trigger this family does not map (answered ``AR`` by default)."""


def message_type(msg: Message) -> tuple[str, str]:
    """(MSH-9.1, MSH-9.2), upper-cased; ``ADT_A01`` in MSH-9.3 only is not looked at."""
    return msg.get("MSH", 9, 1).strip().upper(), msg.get("MSH", 9, 2).strip().upper()


def hl7_time(value: str, zone: str | None, where: str) -> Instant | None:
    """An HL7 DTM (``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``) as an :class:`Instant`; None when empty."""
    value = value.strip()
    if not value:
        return None
    m = _DTM.fullmatch(value)
    if m is None:
        raise MappingError(f"{where}: {value!r} is not an HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S...]]]]]][+/-ZZZZ])")
    y, mo, d, h, mi, s, off = m.groups()
    if h is not None and mi is None:  # YYYYMMDDHH: the hour, read as HH:00 (precision minute is the closest)
        mi = "00"
    if d is None or h is None:
        text = y + (f"-{mo}" if mo else "") + (f"-{d}" if d else "")
    else:
        text = f"{y}-{mo}-{d}T{h}:{mi}" + (f":{s}" if s else "")
    if off:
        text += f"{off[:3]}:{off[3:]}"
    try:
        return normalise(text, zone, ambiguous="earliest", nonexistent="shift_forward")
    except MappingError as exc:
        raise MappingError(f"{where}: {exc}") from None


def _coding(msg: Message, text: str) -> list[Coding]:
    """CE / CWE: the primary and alternate codings."""
    c = msg.components(text)
    out = []
    for at in (0, 3):
        code = c[at].strip() if len(c) > at else ""
        if code:
            system_name = c[at + 2].strip() if len(c) > at + 2 else ""
            out.append(
                Coding(
                    system=_SYSTEMS.get(system_name, system_name or None),
                    code=code,
                    display=(c[at + 1].strip() or None) if len(c) > at + 1 else None,
                )
            )
    return out


def _f(msg: Message, seg: Segment | None, number: int, comp: int = 1) -> str:
    return "" if seg is None else msg.value(seg, number, comp).strip()


def _patient(msg: Message, zone: str | None, updated: Instant | None) -> PatientV1:
    pid = msg.first("PID")
    if pid is None:
        raise MappingError("no PID segment")
    identifiers = []
    for rep in msg.repetitions(pid, 3):
        c = msg.components(rep)
        if c[0].strip():
            authority = c[3].split(msg.delimiters.subcomponent)[0].strip() if len(c) > 3 else ""
            identifiers.append({"system": authority or None, "value": c[0].strip()})
    patient_id = identifiers[0]["value"] if identifiers else _f(msg, pid, 2)
    if not patient_id:
        raise MappingError("PID-3 (patient identifier list) and PID-2 are empty: the patient cannot be named")
    born = _f(msg, pid, 7)
    birth: date | None = None
    precision = None
    if born:
        m = re.fullmatch(r"([0-9]{4})([0-9]{2})?([0-9]{2})?.*", born)
        if m is None:
            raise MappingError(f"PID-7 {born!r} is not an HL7 date")
        try:
            birth = date(int(m[1]), int(m[2] or 1), int(m[3] or 1))
        except ValueError as exc:
            raise MappingError(f"PID-7 {born!r}: {exc}") from None
        precision = "day" if m[3] else "month" if m[2] else "year"
    died = hl7_time(_f(msg, pid, 29), zone, "PID-29")
    flag = _f(msg, pid, 30).upper()
    deceased = True if died is not None or flag == "Y" else False if flag == "N" else None
    home: list[str] | None = None
    for rep in msg.repetitions(pid, 11):
        c = msg.components(rep)
        kind = c[6].strip().upper() if len(c) > 6 else ""
        if kind == "H":
            home = c
            break
        if home is None and kind != "O":
            home = c
    postal = re.sub(r"\s+", "", home[4]).upper() if home and len(home) > 4 else ""
    return PatientV1(
        patient_id=patient_id,
        identifiers=identifiers,
        gender=_GENDER.get(_f(msg, pid, 8).upper()),
        birth_date=birth,
        birth_date_precision=precision,
        deceased=deceased,
        deceased_at=died.utc if died else None,
        deceased_precision=died.precision if died else None,
        address_country=(home[5].strip() or None) if home and len(home) > 5 else None,
        postal_prefix=postal[:3] if len(postal) >= 3 else None,
        source_last_updated=updated.utc if updated else None,
        source_version=msg.get("MSH", 10).strip() or None,
    )


def _encounter(
    msg: Message, trigger: str, zone: str | None, patient_id: str | None, updated: Instant | None
) -> EncounterV1 | None:
    pv1, pid = msg.first("PV1"), msg.first("PID")
    encounter_id = _f(msg, pv1, 19) or _f(msg, pid, 18)
    if not encounter_id:
        return None
    start = hl7_time(_f(msg, pv1, 44), zone, "PV1-44")
    end = hl7_time(_f(msg, pv1, 45), zone, "PV1-45")
    status = ADT_EVENTS[trigger] or ("finished" if end is not None else "in-progress")
    klass = _f(msg, pv1, 2).upper()
    service = _f(msg, pv1, 10)
    return EncounterV1(
        encounter_id=encounter_id,
        patient_id=patient_id,
        status=status,
        encounter_class=Coding(system=_ACTCODE, code=_CLASS.get(klass, klass or "UNK")),
        type=[Coding(system="http://terminology.hl7.org/CodeSystem/v2-0069", code=service)] if service else [],
        period_start=start.utc if start else None,
        period_start_precision=start.precision if start else None,
        period_end=end.utc if end else None,
        period_end_precision=end.precision if end else None,
        source_last_updated=updated.utc if updated else None,
        source_version=msg.get("MSH", 10).strip() or None,
    )


def map_adt(msg: Message, trigger: str, zone: str | None) -> list[Contract]:
    """ADT A01/A04/A08/A03/A11/A13 (module docstring)."""
    updated = hl7_time(msg.get("EVN", 2), zone, "EVN-2") or hl7_time(msg.get("MSH", 7), zone, "MSH-7")
    patient = _patient(msg, zone, updated)
    encounter = _encounter(msg, trigger, zone, patient.patient_id, updated)
    out: list[Contract] = [] if trigger in ("A11", "A13") else [patient]
    if encounter is not None:
        out.append(encounter)
    if not out:
        raise MappingError(f"ADT^{trigger} names no encounter (PV1-19 and PID-18 are empty): nothing to cancel")
    return out


def _first_id(msg: Message, seg: Segment, number: int) -> list[dict[str, str | None]]:
    out: list[dict[str, str | None]] = []
    for rep in msg.repetitions(seg, number):
        c = msg.components(rep)
        if c[0].strip():
            authority = c[3].split(msg.delimiters.subcomponent)[0].strip() if len(c) > 3 else ""
            out.append({"system": msg.unescape(authority) or None, "value": msg.unescape(c[0].strip())})
    return out


def map_merge(msg: Message, zone: str | None) -> list[Contract]:
    """ADT^A40: one ``clinical.patient_merge`` per PID / MRG pair (module docstring)."""
    at = hl7_time(msg.get("EVN", 2), zone, "EVN-2") or hl7_time(msg.get("MSH", 7), zone, "MSH-7")
    control = msg.get("MSH", 10).strip() or None
    out: list[Contract] = []
    pid: Segment | None = None
    for seg in msg.segments:
        if seg.name == "PID":
            pid = seg
        elif seg.name == "MRG":
            n = len(out) + 1
            if pid is None:
                raise MappingError(f"ADT^A40: MRG {n} has no PID before it (which record survives?)")
            survivor = _first_id(msg, pid, 3)
            survivor_id = survivor[0]["value"] if survivor else _f(msg, pid, 2)
            if not survivor_id:
                raise MappingError(f"ADT^A40: the PID before MRG {n} names no patient (PID-3 and PID-2 are empty)")
            merged = _first_id(msg, seg, 1)
            merged_id = merged[0]["value"] if merged else _f(msg, seg, 4)
            if not merged_id:
                raise MappingError(f"ADT^A40: MRG {n} names no prior patient (MRG-1 and MRG-4 are empty)")
            out.append(
                PatientMergeV1.model_validate(
                    {
                        "patient_id": survivor_id,
                        "merged_patient_id": merged_id,
                        "merged_identifiers": merged,
                        "merged_at": at.utc if at else None,
                        "merged_at_precision": at.precision if at else None,
                        "source_version": control,
                    }
                )
            )
            pid = None
    if not out:
        raise MappingError("ADT^A40 without an MRG segment: nothing to merge")
    return out


def _decimal(text: str, where: str) -> str:
    text = text.strip()
    if not re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", text):
        raise MappingError(f"{where}: {text!r} is not a number")
    try:
        return plain_decimal(Decimal(text.lstrip("+")))
    except (InvalidOperation, ValueError) as exc:
        raise MappingError(f"{where}: {text!r}: {exc}") from None


def _unit(msg: Message, obx: Segment) -> dict[str, Any]:
    c = msg.components(msg.raw_field(obx, 6))
    code = c[0].strip()
    if not code:
        return {}
    ucum = len(c) > 2 and c[2].strip().upper() in ("UCUM", "ANS+")
    return {
        "unit": (c[1].strip() if len(c) > 1 else "") or code,
        "system": _SYSTEMS["UCUM"] if ucum else None,
        "code": code if ucum else None,
    }


def _bound(number: str, unit: dict[str, Any]) -> dict[str, Any]:
    return {"value": plain_decimal(Decimal(number.lstrip("+"))), **unit}


def reference_range(text: str, unit: dict[str, Any]) -> dict[str, Any] | None:
    """OBX-7 (unescaped) as a ``reference_range`` entry: the text as sent, with bounds in ``unit`` when OBX-7 is a
    numeric form (module docstring); None when empty. Never raises: an unreadable range stays text."""
    text = text.strip()
    if not text:
        return None
    out: dict[str, Any] = {"text": text}
    try:
        if m := _RANGE.fullmatch(text):
            if Decimal(m[1]) <= Decimal(m[2]):  # a low above its high is a typo we cannot resolve
                out.update(low=_bound(m[1], unit), high=_bound(m[2], unit))
        elif m := _BOUND.fullmatch(text):
            out["high" if m[1].startswith("<") else "low"] = _bound(m[2], unit)
    except (InvalidOperation, ValueError):  # beyond what a contract decimal can carry: the text says it
        return {"text": text}
    return out


def interpretation(msg: Message, field: str) -> list[dict[str, Any]]:
    """OBX-8 (raw, repeating) as ``interpretation`` concepts, one per non-empty repetition (module docstring)."""
    out: list[dict[str, Any]] = []
    for rep in field.split(msg.delimiters.repetition) if field else ():
        c = [x.strip() for x in msg.components(rep)] + ["", "", ""]
        code, text, system = c[:3]
        if not code:
            if text:
                out.append({"coding": [], "text": text})
            continue
        if system.upper() in ("", "HL70078"):
            v3 = code in _FLAGS_V3
            coding = {"system": INTERPRETATION_V3 if v3 else _V2_0078, "code": code, "display": _FLAGS_V3.get(code)}
        else:
            coding = {"system": _SYSTEMS.get(system, system), "code": code, "display": text or None}
        out.append({"coding": [coding], "text": text or None})
    return out


def _value(msg: Message, obx: Segment, zone: str | None, where: str) -> dict[str, Any] | None:
    kind = _f(msg, obx, 2).upper()
    reps = [r for r in msg.repetitions(obx, 5) if r.strip()]
    if not reps:
        return None
    first = reps[0]
    if kind == "NM":
        return {"type": "quantity", "value": _decimal(msg.unescape(first), f"{where} OBX-5 (NM)"), **_unit(msg, obx)}
    if kind == "SN":
        c = [x.strip() for x in msg.components(first)] + ["", "", "", ""]
        comparator, n1, sep, n2 = c[:4]
        if comparator == "=":
            comparator = ""
        if comparator not in ("", "<", "<=", ">=", ">", "<>"):
            raise MappingError(f"{where} OBX-5 (SN): comparator {comparator!r}")
        unit = _unit(msg, obx)
        if sep in ("-", "+") and n2:
            return {
                "type": "range",
                "low": {"value": _decimal(n1, where), **unit},
                "high": {"value": _decimal(n2, where), **unit},
            }
        if sep in (":", "/") and n2:
            return {
                "type": "ratio",
                "numerator": {"value": _decimal(n1, where)},
                "denominator": {"value": _decimal(n2, where)},
            }
        if comparator == "<>":
            raise MappingError(f"{where} OBX-5 (SN): comparator <> without a range")
        return {
            "type": "quantity",
            "value": _decimal(n1, f"{where} OBX-5 (SN)"),
            "comparator": comparator or None,
            **unit,
        }
    if kind in ("ST", "TX", "FT"):
        return {"type": "string", "value": "\n".join(msg.unescape(r) for r in reps)}
    if kind in ("CE", "CWE", "CNE", "CF"):
        coding = _coding(msg, first)
        if not coding:
            c = msg.components(first)
            text = c[1].strip() if len(c) > 1 else ""
            if not text:
                return None
            return {"type": "coded", "coding": [], "text": text}
        return {"type": "coded", "coding": coding, "text": coding[0].display}
    if kind in ("DT", "DTM", "TS"):
        at = hl7_time(msg.components(first)[0], zone, f"{where} OBX-5 ({kind})")
        return None if at is None else {"type": "datetime", "value": at.utc, "precision": at.precision}
    raise MappingError(
        f"{where}: OBX-2 value type {kind or '(empty)'!r} is not mapped (NM, SN, ST, TX, FT, CE, CWE, "
        "CNE, DT, DTM, TS are)"
    )


def map_oru(msg: Message, zone: str | None) -> list[Contract]:
    """ORU^R01: one ``clinical.observation`` per OBX (module docstring)."""
    pid = msg.first("PID")
    patient_id = None
    if pid is not None:
        patient_id = msg.value(pid, 3, 1).strip() or msg.value(pid, 2, 1).strip() or None
    pv1 = msg.first("PV1")
    encounter_id = _f(msg, pv1, 19) or None
    control = msg.get("MSH", 10).strip()
    out: list[Contract] = []
    obr: Segment | None = None
    for seg in msg.segments:
        if seg.name == "OBR":
            obr = seg
            continue
        if seg.name != "OBX":
            continue
        order = _f(msg, obr, 3) or _f(msg, obr, 2) or control
        where = f"OBX {_f(msg, seg, 1) or len(out) + 1}"
        codes = _coding(msg, msg.raw_field(seg, 3))
        if not codes:
            raise MappingError(f"{where}: OBX-3 (observation identifier) is empty")
        sub = _f(msg, seg, 4) or _f(msg, seg, 1) or str(len(out) + 1)
        effective = hl7_time(_f(msg, seg, 14), zone, f"{where} OBX-14") or hl7_time(_f(msg, obr, 7), zone, "OBR-7")
        issued = hl7_time(_f(msg, obr, 22), zone, "OBR-22")
        status = _f(msg, seg, 11).upper()
        category = [c for c in (_f(msg, obr, 24),) if c]
        ranges = reference_range(msg.unescape(msg.raw_field(seg, 7)), _unit(msg, seg))
        out.append(
            ObservationV3.model_validate(
                {
                    "observation_id": f"{order}/{sub}/{codes[0].code}",
                    "patient_id": patient_id,
                    "encounter_id": encounter_id,
                    "status": _STATUS.get(status, "unknown"),
                    "category": category,
                    "code": codes,
                    "code_text": codes[0].display,
                    "effective_start": effective.utc if effective else None,
                    "effective_precision": effective.precision if effective else None,
                    "issued": issued.utc if issued else None,
                    "value": _value(msg, seg, zone, where),
                    "reference_range": [ranges] if ranges else [],
                    "interpretation": interpretation(msg, msg.raw_field(seg, 8)),
                    "source_version": control or None,
                }
            )
        )
    if not out:
        raise MappingError("ORU^R01 without OBX segments: no result to publish")
    return out


def map_message(msg: Message, zone: str | None) -> list[Contract]:
    """Dispatch on MSH-9; :class:`Unsupported` for types and triggers this family does not map."""
    kind, trigger = message_type(msg)
    if kind == "ADT" and trigger in ADT_EVENTS:
        return map_adt(msg, trigger, zone)
    if kind == "ADT" and trigger == "A40":
        return map_merge(msg, zone)
    if kind == "ORU" and trigger in ("R01", ""):
        return map_oru(msg, zone)
    raise Unsupported(
        f"message type {kind}^{trigger} is not mapped by the hl7v2 family "
        f"(ADT^A01/A03/A04/A08/A11/A13/A40 and ORU^R01 are)"
    )
