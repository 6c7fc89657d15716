"""St. Marien Krankenhaus — a Berlin hospital's HL7 v2 feed (ADT and lab results over MLLP, Europe/Berlin).

One integration (``st_marien.hl7``), the family's MLLP connector with the hospital's quirks absorbed here, so its
YAML only says where to listen:

- **Ward and bed in a Z-segment.** The hospital's ADT system does not fill PV1-3 reliably; it sends the stay's
  location in its own ``ZPV`` segment after ``PV1``: ``ZPV|<set id>|<ward>|<bed>|<ward name>``.
  ``clinical.encounter`` has no location field, so (as for Klinikum Mitte's ward extension) the ward becomes one
  more ``type`` Coding, system ``urn:st-marien:ward``, and the bed one with system ``urn:st-marien:bed``, code
  ``<ward>/<bed>`` (a bed number alone names no bed). A ``ZPV`` without a ward is a MappingError (the message
  goes to the DLQ and the sender gets ``AE``), not a stay without a ward; a message without ``ZPV`` keeps the
  family's encounter as it is.
- **Local lab codes.** The laboratory writes OBX-3 in its own coding system ``99SML``
  (``GLU^Glucose^99SML``). The codes the hospital has mapped (``LAB_TO_LOINC``) get their LOINC coding put
  first (consumers query by LOINC; ``with_standard_codes``), the local coding stays. A local code not in the
  table passes as it is: still correct, only not findable by LOINC.
- The zone: HL7 times without an offset are Berlin wall time; the plugin refuses any other configured zone.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from typing_extensions import override

from inlet.connectors.fhir.mapping import with_standard_codes
from inlet.connectors.hl7v2.connector import Hl7v2Connector, Hl7v2Settings, Parsed
from inlet.contracts.base import Contract
from inlet.contracts.clinical_encounter import EncounterV1
from inlet.contracts.clinical_observation import Coding
from inlet.core.connector import PluginSettings
from inlet.core.errors import MappingError

__all__ = ["BED_SYSTEM", "LAB_SYSTEM", "LAB_TO_LOINC", "WARD_SYSTEM", "ZONE", "StMarienHl7"]

ZONE: Final = "Europe/Berlin"
WARD_SYSTEM: Final = "urn:st-marien:ward"
BED_SYSTEM: Final = "urn:st-marien:bed"
LAB_SYSTEM: Final = "99SML"
LAB_TO_LOINC: Final[dict[str, tuple[str, str]]] = {
    "GLU": ("2339-0", "Glucose [Mass/volume] in Blood"),
    "KREA": ("38483-4", "Creatinine [Mass/volume] in Blood"),
    "NA": ("2947-0", "Sodium [Moles/volume] in Blood"),
    "K": ("6298-4", "Potassium [Moles/volume] in Blood"),
    "HB": ("718-7", "Hemoglobin [Mass/volume] in Blood"),
    "LEUK": ("6690-2", "Leukocytes [#/volume] in Blood by Automated count"),
}


class StMarienHl7(Hl7v2Connector):
    """St. Marien's ADT and lab feed: ZPV ward and bed → encounter type codings, local lab codes → LOINC."""

    name: ClassVar[str] = "st_marien.hl7"
    settings_model: ClassVar[type[PluginSettings]] = Hl7v2Settings
    description: ClassVar[str] = "St. Marien HL7 v2 over MLLP (ZPV ward/bed, local lab codes → LOINC, Berlin)"

    source_zone: ClassVar[str | None] = ZONE

    @override
    def map_message(self, record: Parsed) -> list[Contract]:
        location = _location(record)
        out: list[Contract] = []
        for mapped in super().map_message(record):
            event = (
                mapped.model_copy(update={"type": [*mapped.type, *location]})
                if isinstance(mapped, EncounterV1) and location
                else mapped
            )
            out.append(with_standard_codes(event, LAB_SYSTEM, LAB_TO_LOINC))
        return out


def _location(record: Parsed) -> list[Coding]:
    msg = record.message
    zpv = msg.first("ZPV")
    if zpv is None:
        return []
    ward, bed = msg.value(zpv, 2).strip(), msg.value(zpv, 3).strip()
    if not ward:
        given: Any = msg.delimiters.field.join(zpv.fields)
        raise MappingError(f"ZPV-2 (ward) is empty: {given!r}")
    out = [Coding(system=WARD_SYSTEM, code=ward, display=msg.value(zpv, 4).strip() or None)]
    if bed:
        out.append(Coding(system=BED_SYSTEM, code=f"{ward}/{bed}"))
    return out
