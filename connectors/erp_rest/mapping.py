"""ERP records (OData v4 Business Central, OData v2 SAP S/4HANA) to ``erp.invoice`` / ``erp.party`` / ``erp.payment``.

Pure functions. Money never goes through float: a JSON number arrives from :func:`core.exact_json.loads` as an
int, an exact Decimal or a float whose ``repr`` is what the JSON wrote, and :func:`money` turns each into the
decimal string the JSON wrote (OData v2 sends decimals as strings already: they are checked, not converted).
Totals that do not add up (lines vs. net, net + tax vs. gross) are **flagged** with a warning naming the
document, never "fixed". Business Central's blank date ``0001-01-01`` is no date (None); empty GUIDs were
turned into null by the connector's ``decode`` before mapping.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import structlog

from inlet.contracts.erp_invoice import InvoiceLine, InvoiceV1
from inlet.contracts.erp_party import PartyV1
from inlet.contracts.erp_payment import InvoiceAllocation, PaymentV1
from inlet.core.errors import MappingError
from inlet.core.exact_json import number_text
from inlet.core.time import Instant, normalise

__all__ = ["BC_STATUS", "EMPTY_GUID", "MAPPERS", "Mapper", "money", "parse_date"]

log = structlog.get_logger("inlet.erp_rest")

EMPTY_GUID: Final = "00000000-0000-0000-0000-000000000000"
BC_BLANK_DATE: Final = "0001-01-01"
BC_STATUS: Final = {
    "Draft": "draft",
    "In Review": "submitted",
    "Open": "open",
    "Paid": "paid",
    "Canceled": "void",
    "Corrective": "void",
}
BC_BLOCK: Final = {"Ship": "ship", "Invoice": "invoice", "Payment": "payment", "All": "all"}

Mapper = Callable[[dict[str, Any], str, str | None, str | None], Any]
"""``(record, where, zone, local currency) -> contract instance``."""


def money(value: Any, where: str) -> str:
    """A JSON number or decimal string as the plain decimal string it was written as; MappingError otherwise."""
    if isinstance(value, bool) or value is None:
        raise MappingError(f"{where}: expected an amount, got {value!r}")
    if isinstance(value, int | float | Decimal):
        try:
            return number_text(value)
        except ValueError as exc:
            raise MappingError(f"{where}: {exc}") from None
    if isinstance(value, str):
        try:
            Decimal(value.strip())
        except InvalidOperation:
            raise MappingError(f"{where}: {value!r} is not a decimal amount") from None
        return value.strip()
    raise MappingError(f"{where}: expected an amount, got {type(value).__name__}")


def parse_date(value: Any, where: str) -> date | None:
    """A calendar date: ``YYYY-MM-DD`` (BC's blank ``0001-01-01`` is None) or ``/Date(ms)/`` read as its UTC date."""
    if value is None or value in ("", BC_BLANK_DATE):
        return None
    if isinstance(value, str) and value.startswith(("/Date(", "\\/Date(")):
        return normalise(value, "UTC").utc.date()
    if isinstance(value, str):
        try:
            return date.fromisoformat(value[:10]) if len(value) == 10 else datetime.fromisoformat(value).date()
        except ValueError:
            pass
    raise MappingError(f"{where}: {value!r} is not a date")


def _instant(value: Any, where: str, zone: str | None) -> Instant | None:
    if value in (None, ""):
        return None
    try:
        return normalise(value, zone)
    except MappingError as exc:
        raise MappingError(f"{where}: {exc}") from None


def _currency(code: Any, local: str | None, where: str) -> str:
    if isinstance(code, str) and code.strip():
        return code.strip().upper()
    if local is None:
        raise MappingError(
            f"{where}: no currency code (empty means the company's local currency); set settings.local_currency"
        )
    return local


def _required(record: dict[str, Any], key: str, where: str) -> Any:
    value = record.get(key)
    if value is None or value == "":
        raise MappingError(f"{where}: {key} is missing")
    return value


def _check_totals(doc: str, lines: list[InvoiceLine], net: str, tax: str, gross: str) -> None:
    """Flag (log) totals that do not add up; the document is passed on as the ERP states it."""
    if Decimal(net) + Decimal(tax) != Decimal(gross):
        log.warning(
            "invoice totals do not add up: net + tax != gross (passed on as stated)",
            document=doc,
            net=net,
            tax=tax,
            gross=gross,
        )
    if lines and sum(Decimal(line.line_amount) for line in lines) != Decimal(net):
        log.warning(
            "invoice lines do not add up to the net total (passed on as stated)",
            document=doc,
            net=net,
            lines=str(sum(Decimal(line.line_amount) for line in lines)),
        )


# --- OData v4: Business Central API v2.0 -----------------------------------------------------------------------


def _bc_invoice(kind: str) -> Mapper:
    party_key, lines_key = (
        ("customerNumber", "salesInvoiceLines") if kind == "sales" else ("vendorNumber", "purchaseInvoiceLines")
    )

    def mapper(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> InvoiceV1:
        status = BC_STATUS.get(str(r.get("status")))
        if status is None:
            raise MappingError(f"{where}: unknown status {r.get('status')!r} (known: {', '.join(BC_STATUS)})")
        lines: list[InvoiceLine] = []
        raw_lines = sorted(r.get(lines_key) or [], key=lambda x: x.get("sequence") or 0)
        for i, line in enumerate(raw_lines):
            lw = f"{where}.{lines_key}[{i}]"
            if line.get("lineType") == "Comment" or line.get("amountExcludingTax") is None:
                continue  # a comment line carries no amount: not an invoice line
            lines.append(
                InvoiceLine(
                    line_number=len(lines) + 1,
                    source_line_id=line.get("id"),
                    item_number=line.get("lineObjectNumber") or None,
                    description=line.get("description") or None,
                    quantity=money(line.get("quantity"), f"{lw}.quantity"),
                    unit_of_measure=line.get("unitOfMeasureCode") or None,
                    unit_price=money(line.get("unitPrice"), f"{lw}.unitPrice"),
                    line_amount=money(line.get("amountExcludingTax"), f"{lw}.amountExcludingTax"),
                    tax_amount=money(line["totalTaxAmount"], f"{lw}.totalTaxAmount")
                    if line.get("totalTaxAmount") is not None
                    else None,
                    tax_rate=money(line["taxPercent"], f"{lw}.taxPercent")
                    if line.get("taxPercent") is not None
                    else None,
                    tax_code=line.get("taxCode") or None,
                )
            )
        issue = parse_date(_required(r, "invoiceDate", where), f"{where}.invoiceDate")
        assert issue is not None
        modified = _instant(r.get("lastModifiedDateTime"), f"{where}.lastModifiedDateTime", "UTC")
        net = money(r.get("totalAmountExcludingTax"), f"{where}.totalAmountExcludingTax")
        tax = money(r.get("totalTaxAmount"), f"{where}.totalTaxAmount")
        gross = money(r.get("totalAmountIncludingTax"), f"{where}.totalAmountIncludingTax")
        number = str(_required(r, "number", where))
        _check_totals(f"{kind} invoice {number}", lines, net, tax, gross)
        return InvoiceV1(
            kind=kind,
            invoice_id=str(_required(r, "id", where)),
            invoice_number=number,
            party_number=str(_required(r, party_key, where)),
            status=status,
            issue_date=issue,
            due_date=parse_date(r.get("dueDate"), f"{where}.dueDate"),
            currency=_currency(r.get("currencyCode"), local, f"{where}.currencyCode"),
            prices_include_tax=bool(r.get("pricesIncludeTax")),
            net_amount=net,
            tax_amount=tax,
            gross_amount=gross,
            amount_due=money(r["remainingAmount"], f"{where}.remainingAmount")
            if r.get("remainingAmount") is not None
            else None,
            lines=lines,
            last_modified=modified.utc if modified else None,
            last_modified_precision=modified.precision if modified else None,
        )

    return mapper


def _bc_party(kind: str) -> Mapper:
    def mapper(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> PartyV1:
        blocked = str(r.get("blocked") or " ").strip()
        if blocked and blocked not in BC_BLOCK:
            raise MappingError(f"{where}: unknown blocked option {blocked!r}")
        ptype = r.get("type")
        modified = _instant(r.get("lastModifiedDateTime"), f"{where}.lastModifiedDateTime", "UTC")
        country = (r.get("country") or "").strip().upper() or None
        return PartyV1(
            kind=kind,
            party_id=str(_required(r, "id", where)),
            number=str(_required(r, "number", where)),
            name=str(r.get("displayName") or ""),
            party_type={"Company": "company", "Person": "person"}.get(ptype) if kind == "customer" else None,  # type: ignore[arg-type]
            tax_id=r.get("taxRegistrationNumber") or None,
            country=country,
            currency=_currency(r.get("currencyCode"), local, f"{where}.currencyCode")
            if (r.get("currencyCode") or local)
            else None,
            blocked=bool(blocked),
            block_scope=BC_BLOCK.get(blocked),
            last_modified=modified.utc if modified else None,
            last_modified_precision=modified.precision if modified else None,
        )

    return mapper


def _bc_payment(direction: str) -> Mapper:
    party_key = "customerNumber" if direction == "received" else "vendorNumber"

    def mapper(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> PaymentV1:
        paid = _instant(_required(r, "postingDate", where), f"{where}.postingDate", zone)
        assert paid is not None
        modified = _instant(r.get("lastModifiedDateTime"), f"{where}.lastModifiedDateTime", "UTC")
        applies = r.get("appliesToInvoiceNumber")
        return PaymentV1(
            direction=direction,
            payment_id=str(_required(r, "id", where)),
            payment_number=r.get("documentNumber") or None,
            party_number=r.get(party_key) or None,
            status="pending",
            amount=money(r.get("amount"), f"{where}.amount"),
            currency=_currency(r.get("currencyCode"), local, f"{where}.currency"),
            paid_at=paid.utc,
            paid_at_precision=paid.precision,
            invoices=[InvoiceAllocation(invoice_number=str(applies))] if applies else [],
            last_modified=modified.utc if modified else None,
            last_modified_precision=modified.precision if modified else None,
        )

    return mapper


# --- OData v2: SAP S/4HANA billing documents (API_BILLING_DOCUMENT_SRV shape) --------------------------------


def _sap_billing(r: dict[str, Any], where: str, zone: str | None, local: str | None) -> InvoiceV1:
    """``A_BillingDocument`` with ``to_Item`` expanded. Decimals are strings; dates ``/Date(ms)/``; a cancelled
    document is void; a credit memo (``SDDocumentCategory`` ``O``) keeps the amounts as SAP states them."""
    lines: list[InvoiceLine] = []
    items = r.get("to_Item")
    for i, item in enumerate(items.get("results", []) if isinstance(items, dict) else (items or [])):
        lw = f"{where}.to_Item[{i}]"
        lines.append(
            InvoiceLine(
                line_number=i + 1,
                source_line_id=str(item.get("BillingDocumentItem") or "") or None,
                item_number=item.get("Material") or None,
                description=item.get("BillingDocumentItemText") or None,
                quantity=money(item.get("BillingQuantity"), f"{lw}.BillingQuantity"),
                unit_of_measure=item.get("BillingQuantityUnit") or None,
                unit_price=money(item.get("NetPriceAmount"), f"{lw}.NetPriceAmount"),
                line_amount=money(item.get("NetAmount"), f"{lw}.NetAmount"),
                tax_amount=money(item["TaxAmount"], f"{lw}.TaxAmount") if item.get("TaxAmount") is not None else None,
                tax_code=item.get("TaxCode") or None,
            )
        )
    issue = parse_date(_required(r, "BillingDocumentDate", where), f"{where}.BillingDocumentDate")
    assert issue is not None
    net = money(r.get("TotalNetAmount"), f"{where}.TotalNetAmount")
    tax = money(r.get("TotalTaxAmount"), f"{where}.TotalTaxAmount")
    gross = money(r.get("TotalGrossAmount"), f"{where}.TotalGrossAmount")
    number = str(_required(r, "BillingDocument", where))
    _check_totals(f"billing document {number}", lines, net, tax, gross)
    modified = _instant(r.get("LastChangeDateTime"), f"{where}.LastChangeDateTime", "UTC")
    return InvoiceV1(
        kind="sales",
        invoice_id=number,
        invoice_number=number,
        party_number=str(_required(r, "SoldToParty", where)),
        status="void" if r.get("BillingDocumentIsCancelled") else "open",
        issue_date=issue,
        due_date=None,
        currency=_currency(r.get("TransactionCurrency"), local, f"{where}.TransactionCurrency"),
        net_amount=net,
        tax_amount=tax,
        gross_amount=gross,
        lines=lines,
        last_modified=modified.utc if modified else None,
        last_modified_precision=modified.precision if modified else None,
    )


MAPPERS: Final[dict[str, Mapper]] = {
    "salesInvoices": _bc_invoice("sales"),
    "purchaseInvoices": _bc_invoice("purchase"),
    "customers": _bc_party("customer"),
    "vendors": _bc_party("vendor"),
    "customerPayments": _bc_payment("received"),
    "vendorPayments": _bc_payment("made"),
    "A_BillingDocument": _sap_billing,
}
"""Entity set → mapper; the OData v4 ones are Business Central API v2.0, ``A_BillingDocument`` is OData v2."""
