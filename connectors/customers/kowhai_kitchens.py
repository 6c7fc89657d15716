"""Kōwhai Kitchens — a catering company in Auckland on Xero, sales invoices and supplier bills (Pacific/Auckland).

One integration (``kowhai_kitchens.invoices``): the family's Xero connector on ``Invoices`` (ACCREC and
ACCPAY, NZD, GST 15 %). The quirk absorbed here:

- **Bills without a number.** Xero does not require an ``InvoiceNumber`` on a bill (ACCPAY), and their
  accounts team keys the supplier's invoice number into ``Reference`` instead. ``erp.invoice`` needs a number,
  so for a bill whose ``InvoiceNumber`` is empty the ``Reference`` is taken; a bill with neither still goes to
  the DLQ ("InvoiceNumber is missing"), where a person can see it. Sales invoices are numbered by Xero and are
  left alone. The same holds for a supplier's credit note (ACCPAYCREDIT, ``CreditNoteNumber``) when the plugin
  reads ``CreditNotes`` (``settings.endpoint``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from typing_extensions import override

from inlet.connectors.erp_rest.xero import ErpXeroConnector

__all__ = ["KowhaiKitchensInvoices"]


class KowhaiKitchensInvoices(ErpXeroConnector):
    """Kōwhai Kitchens' Xero invoices and bills; a bill's number is its ``Reference`` when Xero has none."""

    name: ClassVar[str] = "kowhai_kitchens.invoices"
    description: ClassVar[str] = "Kōwhai Kitchens Xero invoices and bills (bill numbers from Reference)"

    @override
    def decode(self, raw: Any) -> Any:
        record = super().decode(raw)
        number = {"ACCPAY": "InvoiceNumber", "ACCPAYCREDIT": "CreditNoteNumber"}.get(record.get("Type"))
        if number and not record.get(number) and record.get("Reference"):
            return {**record, number: str(record["Reference"]).strip()}
        return record
