"""``clinical.patient_merge`` v1.0 — two records of one patient were merged at the source: one id is retired.

Emitted by the HL7 v2 family for ``ADT^A40`` (merge patient — patient identifier list): each ``PID`` / ``MRG``
pair of the message is one merge. Mapping rules (``connectors.hl7v2.mapping`` implements them):

- ``patient_id`` is the surviving record: PID-3.1 of the first repetition (PID-2 as fallback), as
  ``clinical.patient`` names it; ``merged_patient_id`` is the retired record: MRG-1.1 of the first repetition
  (MRG-4, the prior patient id, as fallback); ``merged_identifiers`` every MRG-1 repetition with a value, as
  ``system`` (CX.4.1 assigning authority) / ``value``, in source order.
- ``merged_at`` is EVN-2 (when the merge was recorded), else MSH-7, in UTC through ``core.time`` in the
  sending facility's zone, with ``merged_at_precision``; ``source_version`` is MSH-10.

What consumers do: every fact held under ``merged_patient_id`` (patients, encounters, observations) now belongs
to ``patient_id``; the source will not send events for ``merged_patient_id`` again. Events key on
``patient_id``, so a merge stays ordered after the surviving patient's earlier events; the retired id's
earlier events may sit in another partition, so consumers must not rely on ordering with them.

Data minimisation as for ``clinical.patient``: identifiers only, no names (MRG-7 prior name is dropped).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Self

from pydantic import Field, model_validator

from inlet.contracts.base import Contract, Precision, register
from inlet.contracts.clinical_patient import Identifier

__all__ = ["PatientMergeV1"]


@register
class PatientMergeV1(Contract):
    """The record ``merged_patient_id`` was merged into ``patient_id`` (the survivor) at the source."""

    contract_name: ClassVar[str] = "clinical.patient_merge"
    contract_version: ClassVar[str] = "1.0"

    patient_id: str = Field(min_length=1)
    merged_patient_id: str = Field(min_length=1)
    merged_identifiers: list[Identifier] = Field(default_factory=list)
    merged_at: datetime | None = None
    merged_at_precision: Precision | None = None
    source_version: str | None = None

    @model_validator(mode="after")
    def _two_records(self) -> Self:
        if self.patient_id == self.merged_patient_id:
            raise ValueError("a record cannot be merged into itself (patient_id == merged_patient_id)")
        return self

    def entity_key(self) -> str:
        """The survivor's key: the merge stays ordered after the surviving patient's events."""
        return self.patient_id

    def subject(self) -> str:
        return f"Patient/{self.patient_id}"

    def occurred_at(self) -> datetime | None:
        return self.merged_at
