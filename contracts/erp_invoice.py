"""``erp.invoice`` v1.0 — one sales or purchase invoice with its lines, from an ERP.

Money. Every amount (and every quantity, price and rate) is a **decimal string** — ``"164.70"``, ``"-8.24"``
— never a JSON number, so no consumer ever reads it through a binary float. The model accepts a ``str``
matching ``^-?[0-9]+(\\.[0-9]+)?$`` or a :class:`~decimal.Decimal` (written in plain notation, keeping its
scale: ``Decimal("12.50")`` → ``"12.50"``); an ``int`` or ``float`` is refused, because a float has already
rounded. ERP connectors therefore parse source JSON with ``parse_float=Decimal`` (Business Central and
Xero send numbers: ``164.7``, ``54.9``) and pass the Decimals through. The source scale is kept, not
padded to two places. ``currency`` is the ISO 4217 alphabetic code, three upper-case letters.

Dates. ``issue_date`` and ``due_date`` are calendar dates (JSON ``"2019-01-15"``), not instants: an
invoice is legally dated in the ERP's business calendar, and shifting midnight to UTC would move it to the
previous day for every company east of Greenwich. Xero's ``/Date(1539993600000+0000)/`` is read as the UTC
date it encodes. ``last_modified`` is an instant (UTC + source precision, from ``core.time``).

Mapping rules:
- Business Central v2 ``salesInvoices`` / ``purchaseInvoices``: ``kind`` sales / purchase; ``invoice_id`` =
  ``id``; ``invoice_number`` = ``number``; ``party_number`` = ``customerNumber`` / ``vendorNumber``;
  ``issue_date`` = ``invoiceDate``; ``due_date`` = ``dueDate``; ``currency`` = ``currencyCode``, where an
  empty code means the company's local currency, which the connection configures; ``prices_include_tax`` =
  ``pricesIncludeTax``; totals = ``totalAmountExcludingTax`` / ``totalTaxAmount`` / ``totalAmountIncludingTax``;
  ``amount_due`` = ``remainingAmount``; ``status``: Draft → draft, In Review → submitted, Open → open,
  Paid → paid, Canceled and Corrective → void; ``last_modified`` = ``lastModifiedDateTime``.
  Lines (``salesInvoiceLines``): in ``sequence`` order; ``item_number`` = ``lineObjectNumber``;
  ``description``; ``quantity``; ``unit_of_measure`` = ``unitOfMeasureCode``; ``unit_price`` = ``unitPrice``
  (purchase lines: ``unitCost``);
  ``line_amount`` = ``amountExcludingTax``; ``tax_amount`` = ``totalTaxAmount``; ``tax_rate`` = ``taxPercent``;
  ``tax_code`` = ``taxCode``. Comment lines (no amount) are not lines.
- Xero ``Invoices``: ``kind`` sales for ``ACCREC``, purchase for ``ACCPAY``; ``invoice_id`` = ``InvoiceID``;
  ``invoice_number`` = ``InvoiceNumber``; ``party_number`` = ``Contact.ContactNumber``, else
  ``Contact.ContactID``; ``issue_date`` / ``due_date`` = ``Date`` / ``DueDate``; ``prices_include_tax`` =
  ``LineAmountTypes == "Inclusive"``; totals = ``SubTotal`` / ``TotalTax`` / ``Total``; ``amount_due`` =
  ``AmountDue``; ``status``: DRAFT → draft, SUBMITTED → submitted, AUTHORISED → open, PAID → paid,
  VOIDED → void, DELETED → deleted; ``last_modified`` = ``UpdatedDateUTC``. Lines (``LineItems``):
  ``item_number`` = ``ItemCode``; ``Description``; ``Quantity``; ``UnitAmount``; ``line_amount`` is the net
  amount (``LineAmount``, minus ``TaxAmount`` when amounts are inclusive); ``tax_amount`` = ``TaxAmount``;
  ``tax_code`` = ``TaxType``; ``tax_rate`` from the organisation's TaxRates.
- Credit notes — Xero ``CreditNotes`` (``ACCRECCREDIT`` sales, ``ACCPAYCREDIT`` purchase; ``invoice_id`` =
  ``CreditNoteID``, ``invoice_number`` = ``CreditNoteNumber``, ``amount_due`` = ``RemainingCredit``, otherwise
  as ``Invoices``), Business Central ``salesCreditMemos`` / ``purchaseCreditMemos`` (``issue_date`` =
  ``creditMemoDate``, otherwise as the invoices) and SAP credit memos (``SDDocumentCategory`` ``O``) — are
  invoices of their kind with **every amount's sign changed**: ``net_amount``, ``tax_amount``,
  ``gross_amount``, ``amount_due`` and each line's ``quantity``, ``line_amount`` and ``tax_amount``;
  ``unit_price`` and ``tax_rate`` keep the ERP's values (quantity times unit price is still the line amount). The
  ERPs write credit notes positive; the sign is the only change (``34.50`` → ``"-34.50"``, digits and scale
  kept, zero stays ``"0"``, an amount written negative becomes positive). This version has no document type,
  so the sign is how a consumer tells them apart, and a party's documents net by plain addition.
- ``line_number`` is the 1-based position in source order; ``source_line_id`` the source's own line id.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from inlet.contracts.base import DECIMAL_PATTERN, Contract, DecimalString, Monitoring, Part, Precision, register

__all__ = ["DECIMAL_PATTERN", "CurrencyCode", "DecimalString", "InvoiceLine", "InvoiceV1"]
# DecimalString (and its pattern) live in contracts.base, shared with clinical.observation v2; re-exported here
# because plugins and erp.payment imported them from this module first.

CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
"""An ISO 4217 alphabetic currency code (``EUR``, ``USD``, ``NZD``)."""


class InvoiceLine(Part):
    """One invoice line: what was sold or bought, how much of it, at what price and tax."""

    line_number: int = Field(ge=1)
    source_line_id: str | None = None
    item_number: str | None = None
    description: str | None = None
    quantity: DecimalString
    unit_of_measure: str | None = None
    unit_price: DecimalString
    line_amount: DecimalString
    """Net of tax, after line discounts, in the invoice currency."""
    tax_amount: DecimalString | None = None
    tax_rate: DecimalString | None = None
    """Percent (``"5"`` is 5 %), as the ERP states it."""
    tax_code: str | None = None


@register
class InvoiceV1(Contract):
    """A sales or purchase invoice: header, totals and lines, all amounts exact in one currency."""

    contract_name: ClassVar[str] = "erp.invoice"
    contract_version: ClassVar[str] = "1.0"
    monitoring: ClassVar[Monitoring | None] = Monitoring(
        numeric=("gross_amount",),
        series=("kind",),
        categories=("currency", "status", "kind"),
        nulls=("due_date", "amount_due", "last_modified"),
    )

    kind: Literal["sales", "purchase"]
    invoice_id: str = Field(min_length=1)
    invoice_number: str = Field(min_length=1)
    party_number: str = Field(min_length=1)
    status: Literal["draft", "submitted", "open", "paid", "void", "deleted"]
    issue_date: date
    due_date: date | None = None
    currency: CurrencyCode
    prices_include_tax: bool = False
    net_amount: DecimalString
    tax_amount: DecimalString
    gross_amount: DecimalString
    amount_due: DecimalString | None = None
    lines: list[InvoiceLine] = Field(default_factory=list)
    last_modified: datetime | None = None
    last_modified_precision: Precision | None = None

    def entity_key(self) -> str:
        """Events of one invoice stay ordered; sales and purchase numbers live in separate series."""
        return self.subject()

    def subject(self) -> str:
        return f"{'Invoice' if self.kind == 'sales' else 'PurchaseInvoice'}/{self.invoice_number}"

    def occurred_at(self) -> datetime | None:
        """The invoice reached this state when it was last modified."""
        return self.last_modified
