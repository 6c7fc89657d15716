"""Alpenholz AG — a joinery in the canton of Bern on SAP Business One (Service Layer), A/R invoices (Europe/Zurich).

One integration (``alpenholz.invoices``): the family's SAP Business One connector on ``Invoices``, local currency
CHF (some customers across the border are invoiced in EUR). Their Service Layer runs on a server whose clock is
Swiss local time, so ``UpdateDate`` / ``UpdateTime`` are Zurich wall time: the plugin pins ``source_zone`` and
refuses any other ``zone``. The quirk absorbed here:

- **Training series.** New staff learn invoicing in the production company, in their own numbering series
  (``Series`` 77, "SCHULUNG"); the documents are cancelled at the end of each course. They are no business
  facts: every document of that series is filtered with a stated reason (counted, not emitted), cancelled or
  not. Cancelled documents of every other series arrive as ``status: void``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from typing_extensions import override

from inlet.connectors.erp_rest.b1 import ErpB1Connector

__all__ = ["TRAINING_SERIES", "ZONE", "AlpenholzInvoices"]

ZONE: Final = "Europe/Zurich"
TRAINING_SERIES: Final = 77
"""The numbering series of the training documents (B1 ``Series``, "SCHULUNG")."""


class AlpenholzInvoices(ErpB1Connector):
    """Alpenholz's A/R invoices from SAP Business One, without the training series."""

    name: ClassVar[str] = "alpenholz.invoices"
    description: ClassVar[str] = "Alpenholz AG SAP Business One A/R invoices (training series filtered)"
    source_zone: ClassVar[str | None] = ZONE

    @override
    def filter(self, record: Any) -> str | None:
        if record.get("Series") == TRAINING_SERIES:
            return f"training document (numbering series {TRAINING_SERIES}, SCHULUNG): no business fact"
        return super().filter(record)
