"""Klinikum Mitte — a Berlin hospital: Patients, Encounters and Observations by incremental FHIR search.

Three integrations (``klinikum_mitte.patients`` / ``.encounters`` / ``.observations``), each the family's
search connector bound to one resource type; the quirks of the hospital's EHR are absorbed here, so its YAML
only says where the server is:

- **Ward in a vendor extension.** The EHR records the ward of a stay only as an ``Encounter.extension``
  (``WARD_URL``, ``valueString`` such as ``"K3"``). ``clinical.encounter`` has no location field, so the ward
  becomes one more ``type`` Coding, system ``urn:klinikum-mitte:ward``, code the ward, after the EHR's own
  types (``type_text`` stays the first concept's text). A ward extension without a non-empty ``valueString``
  is a MappingError (the DLQ shows it), not a stay without ward.
- **Local lab codes.** The laboratory system codes results in ``urn:klinikum-mitte:lab``; the codes the
  hospital has mapped (``LAB_TO_LOINC``) get their LOINC coding put first (consumers query by LOINC), the
  local coding stays. A local code not in the table passes as it is: the event is still correct, only not
  findable by LOINC, and the table grows when the hospital says what the code means.
- **Naive local times in ``Encounter.period``.** Start and end come without an offset: Berlin wall time.
  They are read in the integration's zone, which must be ``Europe/Berlin`` (any other configured zone is
  refused at start: it would shift every stay). A wall time in the autumn fall-back hour occurs twice: the
  period is read as one series (``core.time.normalise_series``), so the start takes the first occurrence and
  the end the first one not before the start — a stay is never given a negative length. A wall time in the
  spring-forward gap cannot have been read off a clock (it was typed in) and moves forward by the gap.
  Timestamps with an offset (``meta.lastUpdated``, Observation times) are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final

from typing_extensions import override

from inlet.connectors.fhir.mapping import items, obj, with_standard_codes
from inlet.connectors.fhir.search import FhirSearchConnector, pinned_settings
from inlet.contracts.base import Contract
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_observation import Coding
from inlet.contracts.clinical_observation_v2 import ObservationV2
from inlet.contracts.clinical_patient import PatientV1
from inlet.core.connector import PluginSettings
from inlet.core.errors import MappingError
from inlet.core.time import Instant, normalise, normalise_series

__all__ = [
    "LAB_SYSTEM",
    "LAB_TO_LOINC",
    "WARD_SYSTEM",
    "WARD_URL",
    "ZONE",
    "KlinikumMitteEncounters",
    "KlinikumMitteObservations",
    "KlinikumMittePatients",
]

ZONE: Final = "Europe/Berlin"
WARD_URL: Final = "https://fhir.klinikum-mitte.example/StructureDefinition/ward"
WARD_SYSTEM: Final = "urn:klinikum-mitte:ward"
LAB_SYSTEM: Final = "urn:klinikum-mitte:lab"
LAB_TO_LOINC: Final[dict[str, tuple[str, str]]] = {
    "GLU": ("2339-0", "Glucose [Mass/volume] in Blood"),
    "KREA": ("38483-4", "Creatinine [Mass/volume] in Blood"),
    "NA": ("2947-0", "Sodium [Moles/volume] in Blood"),
    "K": ("6298-4", "Potassium [Moles/volume] in Blood"),
    "HB": ("718-7", "Hemoglobin [Mass/volume] in Blood"),
    "LEUK": ("6690-2", "Leukocytes [#/volume] in Blood by Automated count"),
    "THRO": ("777-3", "Platelets [#/volume] in Blood by Automated count"),
}


class _KlinikumMitteSearch(FhirSearchConnector):
    """The hospital's quirks, shared by its three integrations (no ``name``: not a plugin by itself)."""

    phi: ClassVar[bool] = True

    source_zone: ClassVar[str | None] = ZONE

    @override
    def map(self, record: dict[str, Any]) -> Sequence[Contract]:
        if self.resource_type == "Encounter" and record.get("resourceType") == "Encounter":
            return [self._encounter(record)]
        return [with_standard_codes(e, LAB_SYSTEM, LAB_TO_LOINC) for e in super().map(record)]

    def _encounter(self, record: dict[str, Any]) -> EncounterV1:
        where = f"Encounter/{record.get('id')}"
        # The family maps everything but the period, which follows this hospital's wall-time rule below.
        [mapped] = super().map({k: v for k, v in record.items() if k != "period"})
        assert isinstance(mapped, EncounterV1)
        update: dict[str, Any] = {}
        if wards := _wards(record, where):
            update["type"] = [*mapped.type, *wards]
        if (p := record.get("period")) is not None:
            start, end = _local_period(obj(p, f"{where}.period"), f"{where}.period")
            update.update(
                period_start=start.utc if start else None,
                period_start_precision=start.precision if start else None,
                period_end=end.utc if end else None,
                period_end_precision=end.precision if end else None,
            )
        return mapped.model_copy(update=update) if update else mapped


def _wards(record: dict[str, Any], where: str) -> list[Coding]:
    out = []
    for i, raw in enumerate(items(record.get("extension"), f"{where}.extension")):
        ext = obj(raw, f"{where}.extension[{i}]")
        if ext.get("url") != WARD_URL:
            continue
        ward = ext.get("valueString")
        if not isinstance(ward, str) or not ward.strip():
            given = {k: v for k, v in ext.items() if k != "url"}
            raise MappingError(
                f"{where}.extension[{i}] (ward, {WARD_URL}): expected a non-empty valueString, got {given!r}"
            )
        out.append(Coding(system=WARD_SYSTEM, code=ward.strip()))
    return out


def _local_period(p: dict[str, Any], where: str) -> tuple[Instant | None, Instant | None]:
    """Start and end as Berlin wall time, read as one series (module docstring: DST)."""
    start, end = p.get("start"), p.get("end")
    try:
        if start is not None and end is not None:
            first, last = normalise_series([start, end], ZONE, ambiguous="earliest", nonexistent="shift_forward")
            return first, last
        one = start if start is not None else end
        inst = normalise(one, ZONE, ambiguous="earliest", nonexistent="shift_forward") if one is not None else None
    except MappingError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return (inst, None) if start is not None else (None, inst)


class KlinikumMittePatients(_KlinikumMitteSearch):
    """Klinikum Mitte's patients (no quirks of their own: minimised by the contract)."""

    name: ClassVar[str] = "klinikum_mitte.patients"
    settings_model: ClassVar[type[PluginSettings]] = pinned_settings("Patient")
    contracts: ClassVar[tuple[type[Contract], ...]] = (PatientV1,)
    description: ClassVar[str] = "Klinikum Mitte EHR patients (FHIR search, Europe/Berlin)"


class KlinikumMitteEncounters(_KlinikumMitteSearch):
    """Klinikum Mitte's encounters: ward extension → type coding, naive Berlin periods."""

    name: ClassVar[str] = "klinikum_mitte.encounters"
    settings_model: ClassVar[type[PluginSettings]] = pinned_settings("Encounter")
    contracts: ClassVar[tuple[type[Contract], ...]] = (EncounterV1,)
    description: ClassVar[str] = "Klinikum Mitte EHR encounters (ward extension → type, naive Berlin periods)"


class KlinikumMitteObservations(_KlinikumMitteSearch):
    """Klinikum Mitte's observations: local lab codes mapped to LOINC."""

    name: ClassVar[str] = "klinikum_mitte.observations"
    settings_model: ClassVar[type[PluginSettings]] = pinned_settings("Observation")
    contracts: ClassVar[tuple[type[Contract], ...]] = (ObservationV2,)
    description: ClassVar[str] = "Klinikum Mitte EHR observations (local lab codes → LOINC)"
