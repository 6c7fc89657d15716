"""``erp.deletion`` v1.0 — an invoice, party or payment was removed at the ERP.

Read from OData v4 delta links (the ``erp_rest.odata`` plugin with ``delta: track_changes``): the first pass
asks with ``Prefer: odata.track-changes`` and keeps the ``@odata.deltaLink`` of its last page; the next pass
reads that link, whose answer lists the changed entities and a *deleted entity* for every one removed since.
Mapping rules (``connectors.erp_rest.odata`` implements them):

- A deleted entity is an entry with a ``@odata.context`` ending in ``$deletedEntity`` (OData 4.0 JSON:
  ``{"@odata.context": "...#customers/$deletedEntity", "id": "...", "reason": "deleted"}``) or with the
  ``@removed`` control information (4.01: ``{"@removed": {"reason": "deleted"}, "@id": "customers(...)"}``;
  ``@odata.removed`` is read the same way).
- ``entity`` and ``kind`` come from the entity set the integration reads: ``salesInvoices`` → invoice / sales,
  ``purchaseInvoices`` → invoice / purchase, ``customers`` / ``vendors`` → party / customer / vendor,
  ``customerPayments`` / ``vendorPayments`` → payment / received / made.
- ``source_id`` is the entity's key as the ERP states it — the ``invoice_id``, ``party_id`` or ``payment_id``
  of the events the entity had: the key property when the entry carries it, else the key inside the entity id
  (``customers(5d115c9c-...)`` or a URL ending in it → ``5d115c9c-...``; ``Customers('ALFKI')`` → ``ALFKI``).
- ``reason`` is the entry's: ``deleted`` (removed from the ERP) or ``changed`` (no longer in what the
  integration reads, though it may still exist); absent means ``deleted``.
- ``deleted_at`` is the entry's modification time (``lastModifiedDateTime``) when the service sends it, UTC with
  ``deleted_at_precision`` keeping the source's precision; None otherwise (OData does not require one, and
  Business Central sends none) — the deletion then happened between two passes, and the event's time is when
  inlet read it.

Keys. A removal carries the key only, not the number that invoices and parties key their events on, so
``entity_key`` is ``<Label>/<source_id>`` (``Invoice``, ``PurchaseInvoice``, ``Customer``, ``Vendor``,
``Payment``). For payments that is the key of the payment's own events (its deletion stays ordered after
them); for invoices and parties it is not. Consumers therefore match a deletion to what they hold by
``(entity, kind, source_id)`` and must not rely on it sharing a partition with the entity's earlier events.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Final, Literal, Self

from pydantic import Field, model_validator

from inlet.contracts.base import Contract, Precision, register

__all__ = ["ErpDeletionV1", "ErpEntity"]

ErpEntity = Literal["invoice", "party", "payment"]
"""What was removed: the entity of ``erp.invoice``, ``erp.party`` or ``erp.payment``."""

_KINDS: Final = {"invoice": ("sales", "purchase"), "party": ("customer", "vendor"), "payment": ("received", "made")}
_LABELS: Final = {
    "sales": "Invoice",
    "purchase": "PurchaseInvoice",
    "customer": "Customer",
    "vendor": "Vendor",
    "received": "Payment",
    "made": "Payment",
}


@register
class ErpDeletionV1(Contract):
    """An ERP document or master record was removed at the source: consumers drop what they derived from it."""

    contract_name: ClassVar[str] = "erp.deletion"
    contract_version: ClassVar[str] = "1.0"

    entity: ErpEntity
    kind: Literal["sales", "purchase", "customer", "vendor", "received", "made"]
    """The ``kind`` (invoices, parties) or ``direction`` (payments) the entity's own events carry."""
    source_id: str = Field(min_length=1)
    reason: Literal["deleted", "changed"] = "deleted"
    deleted_at: datetime | None = None
    deleted_at_precision: Precision | None = None

    @model_validator(mode="after")
    def _kind_fits(self) -> Self:
        if self.kind not in _KINDS[self.entity]:
            raise ValueError(f"a deleted {self.entity} is {' or '.join(_KINDS[self.entity])}, not {self.kind}")
        return self

    def entity_key(self) -> str:
        """``<Label>/<source_id>``: the key of a payment's own events; invoices and parties key on numbers."""
        return self.subject()

    def subject(self) -> str:
        return f"{_LABELS[self.kind]}/{self.source_id}"

    def occurred_at(self) -> datetime | None:
        return self.deleted_at
