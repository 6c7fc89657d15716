"""``clinical.deletion`` v1.0 — a FHIR R4 resource of one of the mapped types was deleted upstream.

Read from the server's history (``GET [base]/<Type>/_history?_since=...``, the ``fhir.search`` plugin with
``history_deletes: true``): a history Bundle lists versions, and a deletion is an entry whose
``request.method`` is ``DELETE``. Mapping rules (``connectors.fhir.search`` implements them):

- ``resource_type`` / ``resource_id`` come from ``request.url`` (``Observation/123``, also with a base URL in
  front or ``/_history/<version>`` behind it), else from ``fullUrl``.
- ``deleted_at`` is ``response.lastModified``, else the history Bundle's ``meta.lastUpdated`` (when the
  server made the listing: no earlier than the deletion, the closest the server then says). UTC, with
  ``deleted_at_precision`` keeping the source's precision (a server writing whole seconds says ``second``).
- ``source_version`` is the version the deletion created, when the server says it: ``response.etag``
  (``W/"3"``), else the ``_history/3`` of ``request.url``; None when it says neither.

Keys: a history DELETE entry carries no resource body, so the patient it belonged to is unknown. A deleted
Patient keys on its id, which is the key of that patient's events (its deletion stays ordered after them);
every other type keys on ``<Type>/<id>``, the key its own events use when they have no patient. Consumers
therefore match a deletion to what they hold by ``(resource_type, resource_id)`` — the subject
``<Type>/<id>`` — and must not rely on it sharing a partition with the resource's earlier events.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, Precision, register

__all__ = ["DeletedType", "DeletionV1"]

DeletedType = Literal["Observation", "Patient", "Encounter", "Condition", "MedicationRequest"]
"""The resource types whose deletions are published: the ones the FHIR family maps to a contract."""


@register
class DeletionV1(Contract):
    """A resource was deleted at the source: consumers drop what they derived from it."""

    contract_name: ClassVar[str] = "clinical.deletion"
    contract_version: ClassVar[str] = "1.0"

    resource_type: DeletedType
    resource_id: str = Field(min_length=1)
    deleted_at: datetime
    deleted_at_precision: Precision | None = None
    source_version: str | None = None

    def entity_key(self) -> str:
        """A Patient keys on its id (its own events' key); other types on ``<Type>/<id>`` (patient unknown)."""
        return self.resource_id if self.resource_type == "Patient" else self.subject()

    def subject(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"

    def occurred_at(self) -> datetime | None:
        return self.deleted_at
