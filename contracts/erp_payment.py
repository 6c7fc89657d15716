"""``erp.payment`` v1.0 — one payment received from a customer or made to a vendor.

Money is a decimal string with an ISO 4217 currency, exactly as in ``erp.invoice`` (floats refused).

``paid_at`` is an instant (UTC + source precision) rather than a date because some payment sources stamp the
moment; the ERPs sampled give a posting *date*, which ``core.time`` reads as the start of that day in the
connection's zone with precision ``day`` — consumers that want the date take it in that zone.

Mapping rules:
- Business Central v2 ``customerPayments`` / ``vendorPayments`` (journal lines): ``direction`` received /
  made; ``payment_id`` = ``id``; ``payment_number`` = ``documentNumber``; ``party_number`` =
  ``customerNumber`` / ``vendorNumber``; ``amount`` = ``amount``; ``currency`` the journal's currency
  (the company's local currency unless configured); ``paid_at`` = ``postingDate``; one allocation to
  ``appliesToInvoiceNumber`` when set (amount None: the whole payment); ``status`` pending (journal lines are
  not yet posted); ``last_modified`` = ``lastModifiedDateTime``.
- Xero ``Payments``: ``direction`` received for ``ACCRECPAYMENT`` / ``ARCREDITPAYMENT`` /
  ``AROVERPAYMENTPAYMENT`` / ``ARPREPAYMENTPAYMENT``, made for ``ACCPAYPAYMENT`` and the other ``AP*`` types;
  ``payment_id`` = ``PaymentID``; ``amount`` = ``Amount``, **negative for a refund** (the ``*CREDIT*``,
  ``*OVERPAYMENT*`` and ``*PREPAYMENT*`` types: money going back, as credit notes are negative in
  ``erp.invoice``); the paid document is ``Invoice``, else ``CreditNote`` / ``Prepayment`` / ``Overpayment``:
  ``currency`` = its ``CurrencyCode``, ``party_number`` = its ``Contact.ContactNumber``, else ``ContactID``,
  one allocation to its ``InvoiceNumber`` / ``CreditNoteNumber`` (when it has one) with the signed amount;
  ``paid_at`` = ``Date``, a calendar date read as the start of that day in the connection's zone; ``status``
  posted for ``AUTHORISED``, deleted for ``DELETED``; ``payment_number`` and ``method`` None (``Reference``
  is free text, ``IsReconciled`` a bank matter: neither is carried); ``last_modified`` = ``UpdatedDateUTC``.
- ``method`` is the source's payment method code as given (``BANK``, ``CARD``), not normalised.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import Contract, DecimalString, Monitoring, Part, Precision, register
from inlet.contracts.erp_invoice import CurrencyCode

__all__ = ["InvoiceAllocation", "PaymentV1"]


class InvoiceAllocation(Part):
    """The invoice (by number) a payment settles, and how much of the payment goes to it if stated."""

    invoice_number: str = Field(min_length=1)
    amount: DecimalString | None = None


@register
class PaymentV1(Contract):
    """Money received from a customer or paid to a vendor, with the invoices it settles."""

    contract_name: ClassVar[str] = "erp.payment"
    contract_version: ClassVar[str] = "1.0"
    monitoring: ClassVar[Monitoring | None] = Monitoring(
        numeric=("amount",),
        series=("direction",),
        categories=("currency", "status", "direction", "method"),
        nulls=("party_number", "payment_number"),
    )

    direction: Literal["received", "made"]
    payment_id: str = Field(min_length=1)
    payment_number: str | None = None
    party_number: str | None = None
    status: Literal["pending", "posted", "deleted"]
    amount: DecimalString
    currency: CurrencyCode
    paid_at: datetime
    paid_at_precision: Precision | None = None
    invoices: list[InvoiceAllocation] = Field(default_factory=list)
    method: str | None = None
    last_modified: datetime | None = None
    last_modified_precision: Precision | None = None

    def entity_key(self) -> str:
        """Events of one payment (pending → posted → deleted) stay ordered."""
        return self.subject()

    def subject(self) -> str:
        return f"Payment/{self.payment_id}"

    def occurred_at(self) -> datetime | None:
        return self.paid_at
